#!/usr/bin/env bash
# User-space instructions per request, counted by valgrind's callgrind:
# authproxy, the hyper floor (bench/hyper_floor.rs) and nginx, each doing the
# same header injection in front of the same upstream nginx. Deterministic:
# the figure does not move with machine load, unlike CPU time.
#
#   bash bench/callgrind.sh                    # builds both; about 8 minutes
#   bash bench/callgrind.sh AUTHPROXY [FLOOR]  # given binaries, no build
#   RUNS=1 PATHS=small CONNS=1 bash bench/callgrind.sh         # about 1 minute
#   SYSTEMS="authproxy floor" OUT=/tmp/cg.md bash bench/callgrind.sh
#   ROUTES=1000 PATHS=small SYSTEMS="authproxy nginx" bash bench/callgrind.sh
#   KIND=aws_sigv4 SYSTEMS=authproxy bash bench/callgrind.sh  # static basic query allow aws_sigv4
#   SYSTEMS="authproxy duties duties-read" PATHS=upload bash bench/callgrind.sh  # what BODY_READ costs the floor
#   BASELINE=/tmp/authproxy-before SYSTEMS="authproxy baseline" bash bench/callgrind.sh  # a change vs the build before it
#   PROFILE_DIR=/tmp/prof bash bench/callgrind.sh   # keep the 10N dumps
#                                                  # (callgrind_annotate --auto=yes)
#
# For each row (small GET, 64 KiB GET, 64 KiB POST; 1 and 64 connections) the
# proxy, running uninstrumented under callgrind, is warmed up; then N and 10N
# requests are sent (exactly: a small python client in bench/callgrind.py, not
# under valgrind) with instrumentation switched on around each phase
# (callgrind_control -z / -i on / -d / -i off), and the script reports
# (Ir(10N) − Ir(N)) / 9N, which cancels start-up and per-phase constant costs.
# Every system runs RUNS (default 2) times in separate valgrind processes and
# the table shows the mean and the spread. N defaults to 1000 (10,000 in the
# long phase; 64 connections carry 15 or 16 and 156 or 157 requests each).
# Same binary, two runs: within 0.1% for small requests, within about 2% for
# 64 KiB bodies (how the bytes split into reads depends on timing). Separate
# invocations of the same binary differ more, by up to 1.3% on small GET:
# measure a change against the build before it in one invocation (BASELINE).
#
# Needs valgrind, nginx, curl, python3 (nginx is apt-installed if missing).
# Ports: free ones on 127.0.0.1. Processes started here are stopped on exit.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
export PATH="$PATH:/usr/sbin:/sbin"

for tool in valgrind callgrind_control python3; do
    command -v "$tool" >/dev/null || { echo "callgrind.sh: $tool is missing (apt-get install valgrind python3)" >&2; exit 1; }
done
if ! command -v nginx >/dev/null; then
    echo "installing: nginx"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi

if (($# == 0)); then
    echo "building authproxy and the hyper floor (release)…"
    # Two builds: in one, the example's dev-dependency features (tokio's
    # test-util among them) would be unified into the proxy too, which
    # cost it 0.8k instructions per small GET that the shipped binary
    # does not pay.
    (cd "$ROOT" && cargo build --release --quiet --example hyper_floor && cargo build --release --quiet --bin authproxy)
fi
AP=${1:-$ROOT/target/release/authproxy}
FLOOR=${2:-$ROOT/target/release/examples/hyper_floor}
for bin in "$AP" "$FLOOR"; do
    [[ -x "$bin" ]] || { echo "callgrind.sh: $bin is not an executable (cargo build --release --bin authproxy --example hyper_floor)" >&2; exit 1; }
done

TMP=$(mktemp -d /tmp/authproxy-callgrind.XXXXXX)
chmod 755 "$TMP"  # the upstream nginx's workers run as www-data and read the files in it
PY_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$PY_PID" ]] && kill -0 "$PY_PID" 2>/dev/null; then
        kill -TERM "$PY_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$PY_PID" 2>/dev/null || break; sleep 0.1; done
    fi
    # Safety net: processes callgrind.py recorded whose command line names our temp dir.
    if [[ -f "$TMP/pids" ]]; then
        while read -r pid; do
            [[ -n "$pid" && -r /proc/$pid/cmdline ]] || continue
            if tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF "$TMP"; then
                kill -KILL "$pid" 2>/dev/null || true
            fi
        done < "$TMP/pids"
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ -n "${PROFILE_DIR:-}" ]] && mkdir -p "$PROFILE_DIR"
python3 "$HERE/callgrind.py" "$AP" "$FLOOR" "$TMP" ${OUT:+"$OUT"} &
PY_PID=$!
wait "$PY_PID"
