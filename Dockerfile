# syntax=docker/dockerfile:1
#
# authproxy container image.
#
#   docker build -t authproxy .
#   docker run --rm -p 8080:8080 \
#     -v "$PWD/config/examples/sidecar.toml:/etc/authproxy/authproxy.toml:ro" \
#     -v authproxy-state:/var/lib/authproxy \
#     -e AUTHPROXY_INBOUND_TOKEN -e RIPS_CLIENT_ID -e RIPS_EMAIL -e RIPS_PASSWORD -e RICLOUD_TOKEN \
#     authproxy
#
# The image ships no config: mount one at /etc/authproxy/authproxy.toml
# (or point AUTHPROXY_CONFIG / --config elsewhere). Secrets come from the
# environment (${NAME}) or mounted files (${file:/run/secrets/NAME}).
# Token state (rotated refresh tokens!) lives in the volume /var/lib/authproxy;
# the config's store.path must point into it, e.g.
#   [store]
#   path = "/var/lib/authproxy/tokens.json"
# See deploy/ for docker compose and Kubernetes sidecar setups.

# ---- build ---------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src

COPY Cargo.toml Cargo.lock ./
COPY src ./src

# The cache mounts keep the registry and build artefacts between builds
# (BuildKit); the binary is copied out of the cached target folder.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin authproxy \
    && install -D -m 0755 target/release/authproxy /out/authproxy

# ---- runtime -------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates: upstream and token endpoint TLS (system trust store).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 authproxy \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin authproxy \
    && mkdir -p /etc/authproxy /var/lib/authproxy \
    && chown 10001:10001 /var/lib/authproxy \
    && chmod 0700 /var/lib/authproxy

COPY --from=builder /out/authproxy /usr/local/bin/authproxy

ENV AUTHPROXY_CONFIG=/etc/authproxy/authproxy.toml \
    RUST_LOG=info

# Token store (file store). Mount a named volume / PVC here: it holds the
# only copy of single-use rotating refresh tokens.
VOLUME ["/var/lib/authproxy"]

USER 10001:10001
WORKDIR /var/lib/authproxy

EXPOSE 8080

# `authproxy health` reads the config for the listen port and asks
# http://127.0.0.1:<port>/_authproxy/health (no inbound token needed).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["authproxy", "health"]

# SIGTERM: stop accepting, drain in-flight requests (server.drain_timeout,
# default 30s), exit 0. Give `docker stop -t` / stop_grace_period more than that.
STOPSIGNAL SIGTERM

ENTRYPOINT ["authproxy"]
CMD ["run"]
