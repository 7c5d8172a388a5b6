#!/usr/bin/env bash
# target/grpc-venv with the pinned grpcio that tests/grpc.rs runs its gRPC
# server and client with (.ci/run calls this; see tests/python-venv.sh).
exec bash "$(dirname "${BASH_SOURCE[0]}")/../python-venv.sh" grpc grpc
