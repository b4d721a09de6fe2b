#!/usr/bin/env bash
# One command per benchmark: builds a release tree (build-release/, or
# $AVP_BUILD_DIR), installs what the benchmarks need (scripts/deps.sh --bench:
# nginx with the echo module, wrk, h2load, perf) and runs bench/bench.py.
#
#   bench/run.sh                 all of them (about 4 minutes)
#   bench/run.sh ingest          or dispatch, campaign, rate, memory, restart, tls, ceilings
#   bench/run.sh --json out.json dispatch tls
#
# Prints a table with the machine (cores, CPU model, load) and writes the
# numbers as JSON (--json FILE; default <build>/bench/results.json). See
# docs/performance.md.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
scripts/deps.sh --bench
build=${AVP_BUILD_DIR:-$top/build-release}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc 2>/dev/null || echo 2)" \
    --target avenpingd avp-bench-submit avp-bench-lmdb avp-bench-sched avp-bench-http >/dev/null
AVP_BUILD_DIR="$build" exec python3 bench/bench.py "$@"
