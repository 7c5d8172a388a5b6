#!/usr/bin/env bash
# Proxy comparison benchmark: authproxy vs nginx vs HAProxy, all on 127.0.0.1.
#
#   bench/run.sh                  # from anywhere; about 24 minutes, bounded at 26
#   BENCH_QUICK=1 bench/run.sh    # 1 repetition of 1 s runs: checks the script, measures nothing
#   BENCH_ROWS=tls,close BENCH_SECONDS=2 BENCH_REPS=1 bench/run.sh   # some rows only
#   BENCH_KEEP_TMP=1 bench/run.sh # keep the temp folder (configs, logs) for a look afterwards
#
# Row groups (BENCH_ROWS, comma-separated; default all): base (the four
# scenarios below plus the oauth2 / RUST_LOG=warn rows and 1 GiB streaming),
# tls (HTTPS upstream), close (Connection: close), routes (1,000 routes),
# footprint (start-to-ready over 20 starts), dpop (the oauth2 row with a
# DPoP proof per request), tunnel (requests inside a forward-proxy CONNECT
# tunnel vs the reverse route, both to the HTTPS upstream, loaded by
# bench/tunnel_load.rs; nginx and HAProxy as TLS-terminating fronts). BENCH_SECONDS and
# BENCH_REPS override the 5 s x 3 runs. Only a full default run writes
# bench/results.md; any other run writes /tmp/authproxy-bench-results.md
# (BENCH_OUT=FILE chooses).
#
# What it does:
#   1. apt-get installs whichever of wrk, nginx, haproxy is missing (Debian).
#   2. cargo build --release (the proxy, and the mock token endpoint of
#      src/demo/mocks as a process: bench/mock_provider.rs).
#   3. bench/compare.py starts, in a temp dir: an upstream nginx (1 worker;
#      /small 100 B, /large 64 KiB, /upload takes a 64 KiB POST, /huge a
#      sparse 1 GiB file), a python upload sink and the mock RFC 6749 token
#      endpoint (client_credentials); authproxy three times (TOKIO_WORKER_THREADS=1, default
#      runtime, default runtime with RUST_LOG=warn); a front nginx (1 worker,
#      keep-alive pool) and HAProxy (nbthread 1, http-reuse always), all
#      injecting `Authorization: Bearer …`; on the base and close rows also
#      bench/hyper_floor.rs with every duty (FLOOR_DUTIES=all), the floor
#      of the stack.
#      The upstream nginx also serves the same files over TLS (a CA and a
#      certificate made with the openssl CLI); authproxy (`ca_file`), nginx
#      (`proxy_ssl_verify on`, keep-alive pool) and HAProxy (`ssl verify
#      required ca-file`) each have an HTTPS route to it. A second authproxy,
#      nginx and HAProxy carry 1,000 routes.
#   4. Start-to-ready: 20 starts of each proxy, exec to first health 200.
#   5. wrk runs (5 s each, 3 repetitions, systems alternating): small GET at
#      1 and 64 connections, 64 KiB GET and 64 KiB POST at 64 connections,
#      plus authproxy's oauth2 (cached client_credentials token) route, and
#      authproxy's 1 GiB download/upload RSS growth; HTTPS upstream small and
#      64 KiB GET, Connection: close small GET and the 1,000th route's small
#      GET, all at 64 connections.
#   6. Writes bench/results.md (see above) and prints it: per row req/s,
#      latency, proxy CPU per request, RSS; a footprint table (idle RSS,
#      start-to-ready, peak RSS under the 64-connection loads).
# Processes started here are stopped on exit (trap), the temp dir removed.
# Noise: wrk, the upstream and the proxy share the machine's cores; a
# concurrent build (cargo) skews everything; the load average is recorded.
set -euo pipefail

BENCH_START=$(date +%s)
export BENCH_START
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
TMP=$(mktemp -d /tmp/authproxy-bench.XXXXXX)
chmod 755 "$TMP"  # nginx workers run as www-data and read the files in it
PY_PID=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$PY_PID" ]] && kill -0 "$PY_PID" 2>/dev/null; then
        kill -TERM "$PY_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$PY_PID" 2>/dev/null || break; sleep 0.1; done
    fi
    # Safety net: anything compare.py started that is still alive. Only pids
    # it recorded, and only if their command line names our temp dir.
    if [[ -f "$TMP/pids" ]]; then
        while read -r pid; do
            [[ -n "$pid" && -r /proc/$pid/cmdline ]] || continue
            if tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF "$TMP"; then
                kill -KILL "$pid" 2>/dev/null || true
            fi
        done < "$TMP/pids"
    fi
    [[ -n "${BENCH_KEEP_TMP:-}" ]] || rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"
# The Debian packages start system services on install; this bench uses its
# own instances on free ports and leaves those alone.

echo "building authproxy (release)…"
# The examples first, then the proxy on its own: built together, the
# examples' dev-dependency features (tokio's test-util among them) would be
# unified into the proxy as well, which the shipped binary does not have.
(cd "$ROOT" && timeout 300 cargo build --release --quiet --example mock_provider --example tunnel_load --example hyper_floor \
    && timeout 300 cargo build --release --quiet --bin authproxy)
BIN="$ROOT/target/release/authproxy"

# python in the background so the traps fire promptly on ^C.
OUT=${BENCH_OUT:-}
if [[ -z "$OUT" ]]; then
    if [[ -n "${BENCH_QUICK:-}${BENCH_ROWS:-}${BENCH_SECONDS:-}${BENCH_REPS:-}" ]]; then
        OUT=/tmp/authproxy-bench-results.md
    else
        OUT=$HERE/results.md
    fi
fi
echo "results go to $OUT"
python3 "$HERE/compare.py" bench "$BIN" "$TMP" "$OUT" &
PY_PID=$!
wait "$PY_PID"
