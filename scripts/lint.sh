#!/usr/bin/env bash
# Static checks of the project's own C code: clang-format (the repo's
# .clang-format, no changes allowed), cppcheck (warning, performance and
# portability findings are errors; style findings such as variable scope
# are left to review) and clang-tidy (the checks in .clang-tidy, every
# finding an error; it reads the compile database of the build tree
# $AVP_LINT_BUILD, default build/, configured here if missing). Run by
# scripts/test.sh under CI=true, or alone.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
command -v clang-format >/dev/null && command -v cppcheck >/dev/null &&
    command -v run-clang-tidy >/dev/null || scripts/deps.sh --extra
mapfile -t files < <(git ls-files '*.c' '*.h' 2>/dev/null || find daemon queue ipc ctl util tests bench -name '*.[ch]')
echo "clang-format: ${#files[@]} files"
clang-format --dry-run --Werror "${files[@]}"
echo "cppcheck: daemon queue ipc ctl tests/fakeapi bench"
cppcheck --quiet --std=c11 --enable=warning,performance,portability --inline-suppr \
    --error-exitcode=1 -I daemon -I queue -I ipc -I util daemon queue ipc ctl tests/fakeapi bench
db=${AVP_LINT_BUILD:-$top/build}
[ -f "$db/compile_commands.json" ] || cmake -S . -B "$db" >/dev/null
echo "clang-tidy: daemon queue ipc ctl util bench tests ($db/compile_commands.json)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! run-clang-tidy -j"$(nproc 2>/dev/null || echo 2)" -p "$db" -quiet \
    "^$top/(daemon|queue|ipc|ctl|util|bench|tests)/" >"$log" 2>&1 ||
    grep -qE '(warning|error): ' "$log"; then
    grep -E '(warning|error): ' "$log" | sort -u >&2 || tail -20 "$log" >&2
    echo "lint: clang-tidy findings (above)" >&2
    exit 1
fi
echo "lint: clean"
