# Build: the same `cargo build --release --locked` that .ci/run runs.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests ./tests
COPY benches ./benches
RUN cargo build --release --locked

# Run: a small image, a non-root user, config at /etc/authgate/gateway.toml.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin authgate \
 && mkdir -p /etc/authgate/certs
COPY --from=build /src/target/release/authgate /usr/local/bin/authgate
COPY gateway.toml /etc/authgate/gateway.toml
ENV AUTHGATE_CONFIG=/etc/authgate/gateway.toml
USER authgate
# 8443: TLS; 8080: optional redirect_http; 9090: optional ops_listen.
EXPOSE 8443 8080 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/authgate"]
CMD ["run"]
