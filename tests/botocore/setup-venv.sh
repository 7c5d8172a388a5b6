#!/usr/bin/env bash
# Creates target/botocore-venv with the pinned botocore that tests/sigv4.rs
# verifies signatures with (`bash tests/botocore/setup-venv.sh`; .ci/run
# calls it). Reused while requirements.txt is unchanged. Needs python3
# (3.10 or later) with venv; reaches PyPI once.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

VENV=target/botocore-venv
REQ=tests/botocore/requirements.txt
STAMP="$VENV/.requirements.sha256"

if sha256sum --quiet --check "$STAMP" >/dev/null 2>&1; then
    exit 0
fi
echo "::: creating $VENV ($(python3 --version))"
rm -rf "$VENV"
mkdir -p target
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --only-binary :all: -r "$REQ"
"$VENV/bin/python" -c "import botocore.auth, botocore.awsrequest, botocore.credentials"
sha256sum "$REQ" > "$STAMP"
