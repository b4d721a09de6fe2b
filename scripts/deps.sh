#!/usr/bin/env bash
# Installs what building, testing and running the demo need on Debian 12, and
# nothing when everything is already there. Usage: scripts/deps.sh [--extra|--bench]
# --extra adds the tools of the CI's lint/fuzz/valgrind steps (clang with
# libclang-rt-14-dev, which holds libFuzzer; valgrind) and the servers of the
# tests that skip without them (nginx with the echo module and openssl:
# integration.tls.*, bench.smoke). --bench adds the
# benchmarks' tools: nginx with the echo module as the static v2 stub, wrk and
# h2load for the HTTP ceilings, openssl for the stub's certificate, perf for
# profiling. The plain test suite needs neither (those two tests skip).
set -euo pipefail

# systemd: systemd-analyze, systemd-socket-activate, systemd-sysusers and
# systemd-tmpfiles for the service tests (no systemd PID 1 needed);
# dpkg-dev: dpkg-shlibdeps, which CPack uses for the .deb's Depends; file:
# CPack's DEB generator refuses to compute Depends without it (and neither
# dpkg-dev nor a minimal Debian brings it).
pkgs=(build-essential cmake pkg-config python3
      libuv1-dev libcurl4-openssl-dev libcjson-dev liblmdb-dev libsystemd-dev
      libmicrohttpd-dev libjemalloc-dev systemd dpkg-dev file)
bench=(nginx libnginx-mod-http-echo wrk nghttp2-client openssl linux-perf)
if [[ "${1:-}" == "--extra" ]]; then
    pkgs+=(clang libclang-rt-14-dev clang-format clang-tidy cppcheck valgrind lmdb-utils
          nginx libnginx-mod-http-echo openssl)
elif [[ "${1:-}" == "--bench" ]]; then
    pkgs+=("${bench[@]}")
fi

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "deps: installing ${missing[*]} (apt-get, quiet; a minute or two on a fresh machine)" >&2
sudo=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    # sudo clears the environment: pass the frontend through env.
    sudo=(sudo env DEBIAN_FRONTEND=noninteractive)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
