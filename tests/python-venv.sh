#!/usr/bin/env bash
# Creates target/<name>-venv from tests/<name>/requirements.txt (every
# package pinned, wheels only) and checks that the modules named after it
# import: `bash tests/python-venv.sh botocore botocore.auth ...`. Reused
# while requirements.txt is unchanged. Needs python3 (3.10 or later) with
# venv; reaches PyPI once. tests/botocore and tests/grpc call it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

NAME=$1
shift
VENV=target/$NAME-venv
REQ=tests/$NAME/requirements.txt
STAMP="$VENV/.requirements.sha256"

if sha256sum --quiet --check "$STAMP" >/dev/null 2>&1; then
    exit 0
fi
echo "::: creating $VENV ($(python3 --version))"
rm -rf "$VENV"
mkdir -p target
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --only-binary :all: -r "$REQ"
for module in "$@"; do
    "$VENV/bin/python" -c "import $module"
done
sha256sum "$REQ" > "$STAMP"
