#!/usr/bin/env bash
# Side-by-side run of egressd against HAProxy and nginx (and "direct", the
# no-proxy reference) with the peers harness copied in bench/peers/.
#
#   bench/run-peers.sh [--egressd PATH] [--tag NAME] [harness options, e.g. --quick]
#
# Builds a private network world, runs bench/peers/run.sh inside it and
# removes it again (trap), then leaves table.md and results.json under
# bench/results/<date>[-quick]/. Needs root, the tools of bench/peers/setup.sh,
# iptables and dnsmasq; --tag NAME writes to bench/results/<date>-NAME instead
# (a second run on the same day keeps the first). CONTESTANTS="haproxy nginx
# egressd" by default; egressd-opaque is egressd with plain HTTP relayed as
# opaque bytes (the reference of the `http` workload, see bench/README.md); the
# others: squid and egressd-explicit (CONNECT proxies), egressd-agent (node
# agent -> central egressd, two hops), e.g.
#   CONTESTANTS="squid egressd-explicit egressd-agent egressd" bench/run-peers.sh
# egressd-before runs the egressd contestant with another binary, so a change
# is measured before and after in one run:
#   CONTESTANTS="haproxy nginx egressd-before egressd" \
#     bench/run-peers.sh --egressd-before /tmp/egressd-old
#
# World (addresses only from 198.18.0.0/15, the benchmarking range):
#
#   netns egb-h-<pid> (harness)                 netns egb-b-<pid> (origin)
#   clients, harness, contestants               nginx https :9443, http :9080,
#                                               iperf3 :5201,
#   lo: 127.0.0.1 (proxy listeners)             dnsmasq :53 (allowed.test names
#   veth-h 198.18.99.1/24  <--- veth pair --->  veth-b 198.18.99.2/24  -> .2)
#
# Every contestant uses that path: client -> [proxy on lo ->] veth -> origin.
# egressd is transparent: during its turns only, the harness adds
#   iptables -t nat -A OUTPUT -d 198.18.99.2 -p tcp --dports 9443,5201,9080
#            -m mark ! --mark 0x1 -j REDIRECT --to-ports <listener>
# so clients' connections to the origin land on its redirect listener, while
# its own upstream sockets (upstream.mark: 1) go out unchanged. egressd's
# built-in guard (no loopback, no own address) is untouched: the origin is a
# different host as far as egressd can tell. egressd-agent does the same with
# its agent's listener (22444) as the target; the central egressd behind it
# marks its upstream sockets too.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"

egressd=""
egressd_before=""
tag=""
args=()
while (($#)); do
  case "$1" in
    --egressd) egressd="$2"; shift 2 ;;
    --egressd=*) egressd="${1#*=}"; shift ;;
    --egressd-before) egressd_before="$2"; shift 2 ;;
    --egressd-before=*) egressd_before="${1#*=}"; shift ;;
    --tag) tag="-$2"; shift 2 ;;
    --tag=*) tag="-${1#*=}"; shift ;;
    -h|--help) sed -n '2,39p' "$0"; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -z "$egressd" ]; then
  for cand in "$repo/build/bench/egressd" "$repo/build/bench/gateway/egressd" \
              "$repo/build/release/egressd" "$repo/build/release/gateway/egressd"; do
    if [ -x "$cand" ]; then egressd="$cand"; break; fi
  done
fi
if [ -z "$egressd" ] || [ ! -x "$egressd" ]; then
  echo "no egressd binary: build it (cmake --build build/bench --target egressd) or pass --egressd PATH" >&2
  exit 2
fi
egressd="$(readlink -f "$egressd")"
for t in ip iptables dnsmasq; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install iproute2 iptables dnsmasq)" >&2; exit 2; }
done
if [ "$(id -u)" != 0 ]; then echo "run as root (network namespaces, iptables)" >&2; exit 2; fi

quick=""
for a in "${args[@]+"${args[@]}"}"; do [ "$a" = "--quick" ] && quick="-quick"; done
out="$here/results/$(date -u +%Y-%m-%d)$quick$tag"
read -r -a contestants <<<"${CONTESTANTS:-haproxy nginx egressd}"

hns="egb-h-$$"
bns="egb-b-$$"
hip=198.18.99.1
bip=198.18.99.2
mkdir -p /tmp/peersbench
dns_pid=""

cleanup() {
  set +e
  if [ -n "$dns_pid" ]; then kill "$dns_pid" 2>/dev/null; wait "$dns_pid" 2>/dev/null; fi
  ip netns del "$hns" 2>/dev/null
  ip netns del "$bns" 2>/dev/null
  rm -f "/tmp/peersbench/dnsmasq-$$.pid"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$hns"
ip netns add "$bns"
ip link add veth-h netns "$hns" type veth peer name veth-b netns "$bns"
# loopback-sized MTU on the veth so the origin leg moves data in segments as
# large as the baseline's all-loopback setup did
ip -n "$hns" link set lo up
ip -n "$hns" link set veth-h mtu 65535 up
ip -n "$hns" addr add "$hip/24" dev veth-h
ip -n "$bns" link set lo up
ip -n "$bns" link set veth-b mtu 65535 up
ip -n "$bns" addr add "$bip/24" dev veth-b
# A nat OUTPUT chain for the whole run, so connection tracking is on for
# every contestant, not only during egressd's turns (this rule matches an
# address nobody uses).
ip netns exec "$hns" iptables -t nat -A OUTPUT -d 198.18.99.250/32 -j RETURN
# Every client connection and every proxy's upstream connection goes from
# one address to the origin's few ports, and each leaves a TIME_WAIT socket
# for 60 s: with the default 28k ephemeral ports the contestants that run
# later in a workload find the port space crowded (slow connect(), then
# EADDRNOTAVAIL). A wide range and TIME_WAIT reuse for outgoing connections
# (both per namespace) give every contestant the same empty start.
ip netns exec "$hns" sysctl -q -w net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1

# The origin's DNS: allowed.test and everything below it -> the origin, every
# other .test name NXDOMAIN. TTL 60 s as a typical real record. The names the
# deny workload must see refused (denied.test and below, notallowed.test)
# resolve to the origin too, as in the squid contestant's hosts file: an
# explicit proxy resolves the CONNECT target before its policy decides, and
# the refusal measured should be the policy's (403), not a failed lookup.
ip netns exec "$bns" taskset -c 0 dnsmasq --keep-in-foreground --conf-file=/dev/null \
  --no-resolv --no-hosts --bind-interfaces --listen-address="$bip" \
  --address=/allowed.test/"$bip" --address=/denied.test/"$bip" \
  --address=/notallowed.test/"$bip" --local=/test/ --local-ttl=60 \
  --pid-file="/tmp/peersbench/dnsmasq-$$.pid" &
dns_pid=$!

export PEERS_BACKEND_IP="$bip"
export PEERS_BACKEND_NETNS="$bns"
export PEERS_EGRESSD="$egressd"
export PEERS_EGRESSD_BEFORE="$(readlink -f "${egressd_before:-$egressd}")"
export PEERS_EGRESSD_PORT="${PEERS_EGRESSD_PORT:-22443}"
export PEERS_EGRESSD_ADMIN_PORT="${PEERS_EGRESSD_ADMIN_PORT:-22901}"
export PEERS_EGRESSD_ACCESS_LOG="${PEERS_EGRESSD_ACCESS_LOG:-/tmp/peersbench/egressd-access-$$.log}"
export PEERS_DNS="$bip:53"
: >"$PEERS_EGRESSD_ACCESS_LOG" 2>/dev/null || true

echo "egressd: $egressd ($("$egressd" --version 2>&1 | head -1))"
echo "world: netns $hns ($hip) <-veth-> netns $bns ($bip); results -> $out"
mkdir -p "$out"
rc=0
ip netns exec "$hns" "$here/peers/run.sh" --out "$out" "${args[@]+"${args[@]}"}" "${contestants[@]}" || rc=$?
# keep the small, commit-worthy files only (the harness also writes a CSV of
# every rep; results.json holds the same rows)
rm -f "$out/results.csv"
if [ -f "$PEERS_EGRESSD_ACCESS_LOG" ]; then
  echo "egressd access log: $PEERS_EGRESSD_ACCESS_LOG ($(wc -l <"$PEERS_EGRESSD_ACCESS_LOG") records)"
fi
exit "$rc"
