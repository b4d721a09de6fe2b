#!/usr/bin/env bash
# Builds avenpingd and runs every test (unit + integration) with ctest.
# Installs missing Debian packages first. With CI=true: scripts/lint.sh
# (clang-format, cppcheck) runs first, warnings are errors, the suite runs a
# second time under ASan+UBSan, the integration tests run with the daemon
# under valgrind (scripts/valgrind.sh), the tests labelled tsan (the HTTP
# engine threads) run under ThreadSanitizer, and each libFuzzer target runs
# for AVP_FUZZ_SECONDS (scripts/fuzz.sh, clang), and scripts/demo.sh runs
# once. Outside CI the extra steps
# run when asked: AVP_LINT=1, AVP_SANITIZE_TOO=1, AVP_VALGRIND=1, AVP_TSAN=1,
# AVP_FUZZ=1.
# Usage: scripts/test.sh [ctest args...]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
ci=false
[[ "${CI:-}" == "true" ]] && ci=true
if $ci || [[ "${AVP_VALGRIND:-}" == "1" || "${AVP_FUZZ:-}" == "1" ]]; then
    scripts/deps.sh --extra
else
    scripts/deps.sh
fi

jobs=$(nproc 2>/dev/null || echo 2)
werror=OFF
[[ "${CI:-}" == "true" ]] && werror=ON
# CI machines are disposable and root: there the .deb test also installs the
# package with dpkg -i, runs it and purges it (tests/integration/test_systemd.py).
if [[ "${CI:-}" == "true" && $(id -u) -eq 0 ]]; then
    export AVP_DEB_INSTALL=1
fi

run_suite() { # build-dir, extra cmake args...
    local dir=$1; shift
    cmake -S . -B "$dir" -DAVP_WERROR=$werror "$@" >/dev/null
    cmake --build "$dir" -j"$jobs"
    ctest --test-dir "$dir" --output-on-failure -j"$jobs" "${ctest_args[@]}"
}

ctest_args=("$@")
if $ci || [[ "${AVP_LINT:-}" == "1" ]]; then
    echo "== static checks =="
    scripts/lint.sh
fi
run_suite build
if $ci; then
    # The README's other command, so that CI sees it break too.
    echo "== the demo (scripts/demo.sh) =="
    scripts/demo.sh
fi
if [[ "${CI:-}" == "true" || "${AVP_SANITIZE_TOO:-}" == "1" ]]; then
    echo "== the same suite under ASan+UBSan =="
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
        run_suite build-asan -DAVP_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
fi
if $ci || [[ "${AVP_TSAN:-}" == "1" ]]; then
    echo "== the tests labelled tsan under ThreadSanitizer, two HTTP engine threads =="
    cmake -S . -B build-tsan -DAVP_WERROR=$werror -DAVP_TSAN=ON \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build build-tsan -j"$jobs"
    # A report ends the process with 66: the daemon's death fails its test.
    TSAN_OPTIONS=halt_on_error=1:exitcode=66:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp \
        AVP_TEST_CONFIG=http_threads=2 \
        ctest --test-dir build-tsan --output-on-failure -j"$jobs" -L tsan
fi
if $ci || [[ "${AVP_VALGRIND:-}" == "1" ]]; then
    echo "== integration tests with the daemon under valgrind =="
    scripts/valgrind.sh build
fi
if $ci || [[ "${AVP_FUZZ:-}" == "1" ]]; then
    echo "== libFuzzer targets, ${AVP_FUZZ_SECONDS:-20}s each =="
    scripts/fuzz.sh
fi
