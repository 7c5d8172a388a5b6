#!/usr/bin/env bash
# Writes build/link-order.txt: the functions of the authproxy binary that
# run from exec until the first health answer (and in the shutdown after
# it), in the order callgrind lists them. Release builds lay out the
# binary by this file (build.rs, with lld's --symbol-ordering-file), so the code a starting proxy runs sits together instead of
# spread over the 8.5 MB of .text: the kernel maps executable pages 64 KiB
# around each page touched, so start-up code spread over 104 such windows
# made 6.5 MiB of the 10.4 MiB idle RSS (745 distinct 4 KiB pages run;
# measured at 4d8cb10).
#
#   bash build/link-order.sh          # builds, profiles, rewrites the file
#
# Run it again when start-up code changes a lot, and after a change of the
# release profile, a dependency update or a new toolchain: the symbol names
# carry crate hashes that stay the same across code edits but change with
# those. Names that no longer exist are skipped by the linker (a stale file
# orders less, it never breaks the build), but .ci/package-deb.sh fails when
# fewer than 90% of the file's names are in the binary.
# Needs valgrind, curl, openssl, nm (binutils) and python3.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/build/link-order.txt
for tool in valgrind curl openssl nm python3; do
    command -v "$tool" >/dev/null || { echo "link-order.sh: $tool is missing" >&2; exit 1; }
done

(cd "$ROOT" && cargo build --release --quiet --bin authproxy)
BIN=$ROOT/target/release/authproxy

TMP=$(mktemp -d /tmp/authproxy-link-order.XXXXXX)
PID=
cleanup() {
    [[ -n "$PID" ]] && kill "$PID" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=order \
    -days 1 -keyout "$TMP/ca.key" -out "$TMP/ca.pem" 2>/dev/null
# What a typical config starts: a static and an oauth2 provider (one with
# DPoP), plain and https upstreams, a CA file. Nothing is contacted.
cat > "$TMP/proxy.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"

[store]
kind = "memory"

[providers.static]
type = "static"
headers = { Authorization = "Bearer order" }

[providers.cc]
type = "oauth2"
grant = "client_credentials"
token_url = "http://127.0.0.1:9/token"
client_id = "order"
client_secret = "order-secret"

[providers.dp]
type = "oauth2"
grant = "client_credentials"
token_url = "http://127.0.0.1:9/token"
client_id = "order"
client_secret = "order-secret"
dpop = true

[[routes]]
prefix = "/s/"
upstream = "http://127.0.0.1:9/"
provider = "static"

[[routes]]
prefix = "/o/"
upstream = "http://127.0.0.1:9/"
provider = "cc"

[[routes]]
prefix = "/d/"
upstream = "http://127.0.0.1:9/"
provider = "dp"

[[routes]]
prefix = "/tls/"
upstream = "https://127.0.0.1:9/"
provider = "static"
ca_file = "$TMP/ca.pem"
TOML

TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --demangle=no \
    --callgrind-out-file="$TMP/callgrind.out" \
    "$BIN" run --config "$TMP/proxy.toml" >"$TMP/proxy.log" 2>&1 &
PID=$!
ready=
for _ in $(seq 1 600); do
    if curl -sf "http://127.0.0.1:$PORT/_authproxy/health" >/dev/null; then ready=1; break; fi
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
done
[[ -n "$ready" ]] || { cat "$TMP/proxy.log" >&2; echo "link-order.sh: the proxy did not answer" >&2; exit 1; }
kill -INT "$PID"
wait "$PID" || true
PID=

python3 - "$TMP/callgrind.out" "$BIN" "$OUT" <<'PY'
import re, subprocess, sys
profile, binary, out = sys.argv[1:]
objects, functions, names, seen = {}, {}, [], set()
current = None
for line in open(profile, errors="replace"):
    m = re.match(r"(c?)ob=\((\d+)\)(?: (.*))?", line)
    if m:
        if m.group(3):
            objects[m.group(2)] = m.group(3).strip()
        if not m.group(1):
            current = objects.get(m.group(2))
        continue
    m = re.match(r"(c?)fn=\((\d+)\)(?: (.*))?", line)
    if not m:
        continue
    if m.group(3):
        functions[m.group(2)] = re.sub(r"'\d+$", "", m.group(3).strip())
    name = functions.get(m.group(2))
    if not m.group(1) and current is not None and current.endswith("/authproxy") and name and name not in seen:
        seen.add(name)
        names.append(name)
# Only the binary's own symbols: callgrind also names code it has no
# symbol for ("(below main)", bare addresses), which would only dilute the
# check in .ci/package-deb.sh that the file matches the binary.
symbols = set(subprocess.run(["nm", "--defined-only", binary], check=True, capture_output=True,
                             text=True).stdout.split())
kept = [n for n in names if n in symbols]
open(out, "w").write("".join(n + "\n" for n in kept))
print(f"link-order.sh: {len(kept)} functions in {out} ({len(names) - len(kept)} without a symbol left out)")
PY
