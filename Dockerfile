# authproxy container image.
#
#   docker build -t authproxy .
#   docker run --rm --read-only -p 127.0.0.1:8080:8080 \
#     -v "$PWD/config/examples/sidecar.toml:/etc/authproxy/authproxy.toml:ro" \
#     -v authproxy-state:/var/lib/authproxy \
#     -e AUTHPROXY_INBOUND_TOKEN -e RIPS_CLIENT_ID -e RIPS_EMAIL -e RIPS_PASSWORD -e RICLOUD_TOKEN \
#     authproxy
#
# Builds with the classic builder and with BuildKit alike: no `# syntax=`
# line (BuildKit would fetch that frontend image from a registry first) and
# no `RUN --mount`. The dependencies are compiled in a layer of their own,
# so a change under src/ rebuilds only authproxy itself.
#
# The image ships no config: mount one at /etc/authproxy/authproxy.toml
# (or point AUTHPROXY_CONFIG / --config elsewhere). Secrets come from the
# environment (${NAME}) or mounted files (${file:/run/secrets/NAME}).
# Token state (rotated refresh tokens!) lives in the volume /var/lib/authproxy;
# the config's store.path must point into it, e.g.
#   [store]
#   path = "/var/lib/authproxy/tokens.json"
# Nothing else is written, so the root filesystem can be read-only.
# See deploy/ for docker compose and Kubernetes sidecar setups.

# ---- build ---------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src

# Dependencies first, against placeholder sources: this layer is reused
# until Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin authproxy \
    && rm -rf src

# The real sources. COPY keeps the files' modification times, which can be
# older than the placeholder build; touch them so cargo rebuilds the crate.
# build.rs stamps the version (no .git here: AUTHPROXY_COMMIT, else
# "unknown") and lays out the binary by build/link-order.txt.
COPY build.rs ./
COPY build ./build
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin authproxy \
    && install -D -m 0755 target/release/authproxy /out/authproxy

# ---- runtime -------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates: the system trust store for upstream and token endpoint
# TLS (authproxy also carries the Mozilla roots). Not version-pinned
# (DL3008): bookworm only ships fixes to it, and an exact pin breaks the
# build on the next point release; the base image tag fixes the release.
# hadolint ignore=DL3008
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
# only copy of single-use rotating refresh tokens. A fresh named volume
# takes the owner (10001) and mode (0700) of this folder.
VOLUME ["/var/lib/authproxy"]

USER 10001:10001
WORKDIR /var/lib/authproxy

EXPOSE 8080

# Liveness: `authproxy health` finds the listen address in $AUTHPROXY_CONFIG
# and asks /_authproxy/health on it (no inbound token needed, no curl in the
# image). Readiness (`authproxy health --ready`) is for orchestrators that
# tell the two apart; Docker has one health state.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["authproxy", "health"]

# SIGTERM: stop accepting, drain in-flight requests (server.drain_timeout,
# default 30s), exit 0. Give `docker stop -t` / stop_grace_period more than that.
STOPSIGNAL SIGTERM

ENTRYPOINT ["authproxy"]
CMD ["run"]
