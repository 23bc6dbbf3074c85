# Build: profile-guided (bench/pgo.sh: an instrumented build of the same
# `cargo build --release --locked` that .ci/run runs, trained on loopback
# with the shipped config in front of the demo app, then built again with
# that profile: 0.86x the CPU per proxied request of the plain build, see
# README "Performance"). `--build-arg PGO=0` builds the plain one.
#
# The base images are named by tag. Pin them by digest in your own build
# (`docker buildx imagetools inspect rust:1-bookworm` shows it) with
# --build-arg RUST_IMAGE=rust:1-bookworm@sha256:... and
# --build-arg RUNTIME_IMAGE=debian:bookworm-slim@sha256:...
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
ARG PGO=1
WORKDIR /src
# llvm-profdata for the profile-guided build, in a layer of its own.
RUN if [ "$PGO" = 1 ]; then rustup component add llvm-tools; fi
# The dependencies, in a layer that only Cargo.toml and Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN cargo fetch --locked
COPY gateway.toml ./
COPY src ./src
COPY bench ./bench
# Copied last: a test or bench edit does not redo the layers above.
COPY benches ./benches
COPY tests ./tests
RUN if [ "$PGO" = 1 ]; then bench/pgo.sh target/release/authgate; \
    else cargo build --release --locked; fi \
 && strip target/release/authgate
# The image's config: the shipped gateway.toml with the sessions and the
# users file in the volume (the users file made from the read-only one in
# /etc/authgate at the first start, so the password page and the admin
# page can change it) and the ops listener on for the health check
# (loopback; set 0.0.0.0:9090 in your own config for Prometheus or
# Kubernetes probes). tests/it/deploy.rs applies these same edits and runs
# the result.
RUN cp gateway.toml /tmp/gateway.toml && sed -i \
    -e 's|^# path = "authgate-state.db".*|path = "/var/lib/authgate/authgate-state.db"|' \
    -e 's|^# ops_listen = "127.0.0.1:9090".*|ops_listen = "127.0.0.1:9090"|' \
    -e 's|^file = "users.toml"$|file = "/var/lib/authgate/users.toml"|' \
    -e 's|^# seed = "users.toml".*|seed = "/etc/authgate/users.toml"|' \
    /tmp/gateway.toml \
 && grep -q '^path = "/var/lib/authgate/authgate-state.db"' /tmp/gateway.toml \
 && grep -q '^ops_listen = "127.0.0.1:9090"' /tmp/gateway.toml \
 && grep -q '^file = "/var/lib/authgate/users.toml"' /tmp/gateway.toml \
 && grep -q '^seed = "/etc/authgate/users.toml"' /tmp/gateway.toml

# Run: a small image, a numeric non-root user (the kubelet's runAsNonRoot
# needs a number), the system's CA roots (an https:// upstream without
# `ca`, a rediss:// Redis), OpenSSL's library (webauthn-rs checks passkeys
# with it; the build image has its headers), config at
# /etc/authgate/gateway.toml.
FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="authgate" \
      org.opencontainers.image.description="A TLS-terminating reverse proxy that puts a login, sessions and role rules in front of web apps" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 authgate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin authgate \
 && mkdir -p /etc/authgate/certs /var/lib/authgate \
 && chown 10001:10001 /var/lib/authgate && chmod 0700 /var/lib/authgate
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
COPY --from=build /src/target/release/authgate /usr/local/bin/authgate
COPY --from=build /tmp/gateway.toml /etc/authgate/gateway.toml
# Sessions (the state file and its -wal and -shm files), the users file
# and the secrets the gateway makes are kept in /var/lib/authgate: mount a
# volume there so that they survive a new container, and the root
# filesystem can stay read-only.
VOLUME /var/lib/authgate
ENV AUTHGATE_CONFIG=/etc/authgate/gateway.toml
USER 10001:10001
# 8443: TLS; 8080: optional redirect_http; 9090: optional ops_listen.
EXPOSE 8443 8080 9090
STOPSIGNAL SIGTERM
# No curl in the image: the binary asks its own ops listener.
HEALTHCHECK --interval=30s --timeout=6s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/authgate", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/authgate"]
CMD ["run"]
