# Build: profile-guided (bench/pgo.sh: an instrumented build of the same
# `cargo build --release --locked` that .ci/run runs, trained on loopback
# with the shipped config in front of the demo app, then built again with
# that profile: 0.86x the CPU per proxied request of the plain build, see
# README "Performance"). `--build-arg PGO=0` builds the plain one.
FROM rust:1-bookworm AS build
ARG PGO=1
WORKDIR /src
COPY Cargo.toml Cargo.lock gateway.toml ./
COPY src ./src
COPY tests ./tests
COPY benches ./benches
COPY bench ./bench
RUN if [ "$PGO" = 1 ]; then bench/pgo.sh target/release/authgate; \
    else cargo build --release --locked; fi

# Run: a small image, a non-root user, config at /etc/authgate/gateway.toml.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin authgate \
 && mkdir -p /etc/authgate/certs /var/lib/authgate \
 && chown authgate /var/lib/authgate && chmod 0700 /var/lib/authgate
COPY --from=build /src/target/release/authgate /usr/local/bin/authgate
COPY gateway.toml /etc/authgate/gateway.toml
# Sessions are kept in /var/lib/authgate (the state file and its -wal and
# -shm files): mount a volume there so that they survive a new container,
# and the root filesystem can stay read-only.
# The ops listener is on (loopback: the health check below asks it; set
# 0.0.0.0:9090 in your own config for Prometheus or Kubernetes probes).
# tests/it/deploy.rs applies these same edits and runs the result.
RUN sed -i \
    -e 's|^# path = "authgate-state.db".*|path = "/var/lib/authgate/authgate-state.db"|' \
    -e 's|^# ops_listen = "127.0.0.1:9090".*|ops_listen = "127.0.0.1:9090"|' \
    /etc/authgate/gateway.toml \
 && grep -q '^path = "/var/lib/authgate/authgate-state.db"' /etc/authgate/gateway.toml \
 && grep -q '^ops_listen = "127.0.0.1:9090"' /etc/authgate/gateway.toml
VOLUME /var/lib/authgate
ENV AUTHGATE_CONFIG=/etc/authgate/gateway.toml
USER authgate
# 8443: TLS; 8080: optional redirect_http; 9090: optional ops_listen.
EXPOSE 8443 8080 9090
STOPSIGNAL SIGTERM
# No curl in the image: the binary asks its own ops listener.
HEALTHCHECK --interval=30s --timeout=6s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/authgate", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/authgate"]
CMD ["run"]
