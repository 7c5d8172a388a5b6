#!/usr/bin/env bash
# target/botocore-venv with the pinned botocore that tests/sigv4.rs verifies
# signatures with (.ci/run calls this; see tests/python-venv.sh).
exec bash "$(dirname "${BASH_SOURCE[0]}")/../python-venv.sh" botocore \
    botocore.auth botocore.awsrequest botocore.credentials
