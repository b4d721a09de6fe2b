#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (tests/fuzz, build dir build-fuzz)
# and runs each. Usage:
#   scripts/fuzz.sh                 a short run of each target (ctest -L fuzz,
#                                   AVP_FUZZ_SECONDS each, default 20)
#   scripts/fuzz.sh --runs N        N executions of each target (the long run
#                                   of docs/durability.md uses 10000000)
# New inputs go to build-fuzz/tests/fuzz/found-*; crashes to crash-* files in
# the current dir; the seed corpora in tests/fuzz/corpus stay untouched.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${AVP_FUZZ_BUILD:-$top/build-fuzz}
werror=OFF
[[ "${CI:-}" == "true" ]] && werror=ON
CC=clang cmake -S "$top" -B "$build" -DAVP_FUZZ=ON -DAVP_BUILD_TESTS=OFF -DAVP_WERROR=$werror \
    -DAVP_FUZZ_SECONDS="${AVP_FUZZ_SECONDS:-20}" >/dev/null
cmake --build "$build" -j"$(nproc 2>/dev/null || echo 2)" --target fuzz_request fuzz_record fuzz_answer
if [[ "${1:-}" == "--runs" ]]; then
    for t in request record answer; do
        echo "== fuzz_$t: $2 runs"
        "$build/tests/fuzz/fuzz_$t" -runs="$2" -max_len=65536 -print_final_stats=1 \
            "$build/tests/fuzz/found-$t" "$top/tests/fuzz/corpus/$t" 2>&1 |
            grep -E '^(stat::number|stat::average|#[0-9]+[[:space:]]+DONE|==[0-9]+==|SUMMARY)'
    done
else
    ctest --test-dir "$build" -L fuzz --output-on-failure
fi
