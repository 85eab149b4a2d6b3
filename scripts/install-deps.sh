#!/usr/bin/env bash
# Installs every Debian 12 package egressd needs to build, test and fuzz.
# Idempotent: packages already present are skipped, so a warm machine pays
# nothing. Used by the README, .ci/run and the Dockerfile's build stage.
#
#   scripts/install-deps.sh            build + test dependencies
#   scripts/install-deps.sh --build    build dependencies only (Dockerfile)
#
# Test mode also installs the npm packages of the manifest validator
# (k8s/validate, ctest label k8s) with `npm ci`, skipped while its
# node_modules matches package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."
test_mode=1
[[ "${1:-}" == "--build" ]] && test_mode=0

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
  podman runc debootstrap
)

pkgs=("${build_pkgs[@]}")
((test_mode == 0)) || pkgs+=("${test_pkgs[@]}")
# Node.js 20 with npm comes with these machines (the nodejs package); only
# where node is missing altogether fall back to Debian's.
((test_mode == 0)) || command -v node >/dev/null 2>&1 || pkgs+=(nodejs npm)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#pkgs[@]} packages present"
else
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # --no-install-recommends: prometheus would otherwise pull 300+ MB of exporters.
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "install-deps: done"
fi

# The manifest validator's npm packages, pinned by k8s/validate/package-lock.json.
# A stamp with the lock file's hash says node_modules was installed from it.
if ((test_mode == 1)); then
  lock=k8s/validate/package-lock.json
  stamp=k8s/validate/node_modules/.egressd-lock.sha256
  want=$(sha256sum "$lock" | cut -d' ' -f1)
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "install-deps: k8s/validate node_modules up to date"
  else
    echo "install-deps: npm ci in k8s/validate"
    (cd k8s/validate && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
  fi
fi
