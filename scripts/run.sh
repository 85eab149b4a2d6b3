#!/usr/bin/env bash
# The README's run command: installs what is missing, builds egressd and
# runs it in the foreground on config/egressd.yaml (or the file given).
# Ctrl-C drains and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-config/egressd.yaml}

bash scripts/install-deps.sh --build
cmake --preset release >/dev/null
cmake --build --preset release --target egressd -j "$(nproc)"

bin=build/release/gateway/egressd
"$bin" check --config "$config"
cat <<TXT

egressd is starting on $config. To send a local client through it, in
another shell (as root), redirect one user's outbound TCP to the listener:

  iptables -t nat -A OUTPUT -p tcp -m owner --uid-owner nobody -j REDIRECT --to-ports 15001
  runuser -u nobody -- curl -sv https://github.com/ -o /dev/null   # allowed by the default policy
  runuser -u nobody -- curl -sv https://example.com/ -o /dev/null  # denied: TLS alert access_denied
  curl -s http://127.0.0.1:9901/metrics | grep egressd_flows_total
  iptables -t nat -D OUTPUT -p tcp -m owner --uid-owner nobody -j REDIRECT --to-ports 15001

Explain a decision without any traffic:
  $bin explain --config $config --src 10.0.1.5 --dst 140.82.112.3:443 --host github.com

TXT
exec "$bin" --config "$config"
