#!/usr/bin/env bash
# Builds avenpingd and runs the demo: the bundled fake v2 API and the daemon
# as real processes, a small campaign of text and template jobs submitted over
# the Unix socket, and a summary of what the API received.
# Installs missing Debian packages first.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
scripts/deps.sh
echo "demo: building avenpingd, avenpingctl and the fake API in build/" >&2
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" --target avenpingd avenpingctl avp-fakeapi >/dev/null
exec python3 scripts/demo.py "$@"
