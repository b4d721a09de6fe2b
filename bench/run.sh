#!/usr/bin/env bash
# Builds a release tree and runs the benchmarks; prints a table with the
# machine. Extra arguments go to bench/bench.py (--jobs, --dispatch-jobs, --json).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
scripts/deps.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-release -j"$(nproc 2>/dev/null || echo 2)" \
    --target avenpingd avp-fakeapi avp-bench-submit >/dev/null
AVP_BUILD_DIR="$top/build-release" exec python3 bench/bench.py "$@"
