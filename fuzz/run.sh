#!/usr/bin/env bash
# Coverage-guided fuzzing smoke run: builds the cargo-fuzz targets and runs
# each for SECONDS (default 20), printing the executions per target.
# Exits non-zero when a target crashes (the input lands in
# fuzz/artifacts/<target>/) or the build fails.
#
#   fuzz/run.sh [SECONDS]          all targets
#   TARGETS="fuzz_token" fuzz/run.sh 60
#   SANITIZER=none fuzz/run.sh     without AddressSanitizer (faster)
#   FUZZ_KNOWN=asterisk,upstream_host,debug_escape fuzz/run.sh 180
#                                  skip findings already reported (tags are
#                                  at the checks in fuzz_targets/*.rs)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). cargo fuzz passes
# -Z flags to rustc; on a stable toolchain RUSTC_BOOTSTRAP=1 allows them.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

SECONDS_PER_TARGET="${1:-20}"
TARGETS="${TARGETS:-fuzz_config fuzz_routes fuzz_token fuzz_discovery fuzz_sigv4 fuzz_policy fuzz_device fuzz_authority fuzz_dpop fuzz_grpc}"
SANITIZER="${SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

echo "::: cargo fuzz build (sanitizer: $SANITIZER)"
build_start=$(date +%s)
for t in $TARGETS; do
    cargo fuzz build --sanitizer "$SANITIZER" "$t"
done
echo "build took $(( $(date +%s) - build_start ))s"

logs="target/run-logs"
mkdir -p "$logs"
failed=()
for t in $TARGETS; do
    mkdir -p "corpus/$t" "artifacts/$t"
    dict=()
    if [ -f "dict/$t.dict" ]; then dict=(-dict="dict/$t.dict"); fi
    echo "::: $t for ${SECONDS_PER_TARGET}s"
    status=0
    cargo fuzz run --sanitizer "$SANITIZER" "$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 \
        -timeout=10 -rss_limit_mb=2048 -max_len=8192 "${dict[@]}" \
        >"$logs/$t.log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n1)
    cov=$(grep -o 'cov: [0-9]*' "$logs/$t.log" | tail -n1 || true)
    echo "$t: ${execs:-?} executions, ${cov:-cov: ?}, exit $status"
    if [ "$status" -ne 0 ]; then
        failed+=("$t")
        echo "----- $t failed; end of its log ($logs/$t.log):"
        tail -n 60 "$logs/$t.log"
        echo "----- artifacts:"
        ls -l "artifacts/$t" || true
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "::: fuzzing found problems in: ${failed[*]}"
    exit 1
fi
echo "::: fuzzing OK"
