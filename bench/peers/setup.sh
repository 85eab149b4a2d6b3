#!/usr/bin/env bash
# Installs what run.sh needs, from Debian 12's archive only.
# Services are not needed (the harness starts its own foreground copies on
# loopback ports), so nothing here enables or starts them.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -q --no-install-recommends \
  nginx libnginx-mod-stream \
  haproxy \
  squid \
  iperf3 wrk curl openssl \
  python3 util-linux procps \
  iptables dnsmasq   # egressd copy: bench/run-peers.sh's network world
