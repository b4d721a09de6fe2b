#!/usr/bin/env bash
# Static checks of the project's own C code: clang-format (the repo's
# .clang-format, no changes allowed) and cppcheck (warning, performance and
# portability findings are errors; style findings such as variable scope
# are left to review). Run by scripts/test.sh under CI=true, or alone.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
command -v clang-format >/dev/null && command -v cppcheck >/dev/null || scripts/deps.sh --extra
mapfile -t files < <(git ls-files '*.c' '*.h' 2>/dev/null || find daemon queue ipc ctl tests bench -name '*.[ch]')
echo "clang-format: ${#files[@]} files"
clang-format --dry-run --Werror "${files[@]}"
echo "cppcheck: daemon queue ipc ctl tests/fakeapi bench"
cppcheck --quiet --std=c11 --enable=warning,performance,portability --inline-suppr \
    --error-exitcode=1 -I daemon -I queue -I ipc -I util daemon queue ipc ctl tests/fakeapi bench
echo "lint: clean"
