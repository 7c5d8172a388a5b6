#!/usr/bin/env bash
# Creates target/grpc-venv with the pinned grpcio that tests/grpc.rs runs
# its gRPC server and client with (`bash tests/grpc/setup-venv.sh`; .ci/run
# calls it). Reused while requirements.txt is unchanged. Needs python3
# (3.10 or later) with venv; reaches PyPI once.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

VENV=target/grpc-venv
REQ=tests/grpc/requirements.txt
STAMP="$VENV/.requirements.sha256"

if sha256sum --quiet --check "$STAMP" >/dev/null 2>&1; then
    exit 0
fi
echo "::: creating $VENV ($(python3 --version))"
rm -rf "$VENV"
mkdir -p target
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --only-binary :all: -r "$REQ"
"$VENV/bin/python" -c "import grpc"
sha256sum "$REQ" > "$STAMP"
