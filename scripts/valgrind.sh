#!/usr/bin/env bash
# Runs integration tests with the daemon under valgrind (memcheck): a memory
# error or a definite leak in any daemon process fails the run - through its
# exit status (99) for daemons stopped with SIGTERM, and through its log for
# daemons killed with SIGKILL. Needs a built tree (scripts/test.sh builds one).
# Usage: scripts/valgrind.sh [BUILD_DIR] [CTEST_REGEX]
# The default selection leaves out the tests that measure time or load
# (churn, torture, 429s, the rate/pause policy tests, the full-store test's
# timed phases, and tls.h2_goaway and tls.h1_idle_close: a daemon slowed
# by valgrind on a busy machine writes streams into connections nginx
# already closed after its GOAWAY (EPIPE) or its keep-alive timeout (the
# close reaches the daemon's loop after it reused the connection), or waits
# past connect_timeout_ms for a TLS handshake, and the daemon counts those
# jobs maybe sent - `uncertain` under at-most-once, which those tests
# forbid; they run in the plain and ASan suites), which
# valgrind's slowdown would break, not the daemon; it takes about two
# minutes on 2 cores.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$top/build}
regex=${2:-integration\.}
exclude='fakeapi|torture|churn|resets_and_429|policy\.|storage_full|tls\.h2_goaway|tls\.h1_idle_close'
command -v valgrind >/dev/null || { echo "valgrind.sh: valgrind not installed (scripts/deps.sh --extra)" >&2; exit 1; }

logs=$(mktemp -d "${TMPDIR:-/tmp}/avp-valgrind-XXXXXX")
# The daemon may be linked with jemalloc: valgrind must replace its malloc
# as it does glibc's (somalloc), or it sees neither errors nor leaks.
export AVP_WRAPPER="valgrind --quiet --vgdb=no --error-exitcode=99 --leak-check=full \
--soname-synonyms=somalloc=*jemalloc* \
--errors-for-leak-kinds=definite --show-leak-kinds=definite --num-callers=30 \
--log-file=$logs/vg.%p.log"
# Symbols bound at load: once in CI valgrind reported writes below the stack
# pointer inside ld.so's lazy binding (_dl_runtime_resolve_xsave ->
# do_lookup_x, frames it could not unwind), not in the daemon's code.
export LD_BIND_NOW=1
status=0
ctest --test-dir "$build" -R "$regex" -E "$exclude" --output-on-failure -j2 || status=1
# With --quiet a log holds only errors: any non-empty log is a finding.
for f in "$logs"/vg.*.log; do
    [[ -s "$f" ]] || continue
    echo "== valgrind: $f" >&2
    cat "$f" >&2
    status=1
done
n=$(ls "$logs" | wc -l)
if [[ $status -eq 0 ]]; then
    echo "valgrind: clean ($n daemon processes)"
    rm -rf "$logs"
else
    echo "valgrind: FAILED (logs kept in $logs)" >&2
fi
exit $status
