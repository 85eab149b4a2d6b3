#!/usr/bin/env bash
# Installs every Debian 12 package egressd needs to build, test and fuzz.
# Idempotent: packages already present are skipped, so a warm machine pays
# nothing. Used by the README, .ci/run and the Dockerfile's build stage.
#
#   scripts/install-deps.sh            build + test dependencies
#   scripts/install-deps.sh --build    build dependencies only (Dockerfile)
set -euo pipefail

build_pkgs=(
  build-essential cmake ninja-build pkg-config ccache git
  libboost1.81-dev libboost-json1.81-dev
  libssl-dev libnghttp2-dev libyaml-cpp-dev libc-ares-dev libidn2-dev
  libcli11-dev libspdlog-dev libfmt-dev libjemalloc-dev
)
test_pkgs=(
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  clang-14 libclang-rt-14-dev
  iproute2 iptables nginx-light dnsmasq-base curl openssl
  nghttp2-client nghttp2-server prometheus python3 procps strace
)

pkgs=("${build_pkgs[@]}")
[[ "${1:-}" == "--build" ]] || pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends: prometheus would otherwise pull 300+ MB of exporters.
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
