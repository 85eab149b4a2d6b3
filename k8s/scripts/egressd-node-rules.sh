#!/bin/sh
# egressd-node-rules: the iptables rules a node needs for an egressd node
# agent. The DaemonSet (k8s/overlays/node-agents) runs this file from the
# image, and the two-node integration world (test/integration/nodes_world.py)
# runs the same file to set up its nodes, so what ships is what is tested.
#
#   egressd-node-rules install|remove|status [options]
#
#   --pod-cidr CIDR      TCP from these sources is redirected (repeatable)
#   --pod-interface IF   ...or arriving on these interfaces, e.g. cali+ (repeatable)
#   --exempt CIDR        destinations never redirected: pod, service and node
#                        ranges, so in-cluster traffic stays direct (repeatable)
#   --port PORT          the agent's redirect listener (default 15001)
#   --mark MARK          the agent's upstream.mark: its own sockets are exempt
#                        (default 42; 0 for none)
#   --no-quic-block      do not refuse UDP 443 from the pods
#
# install is idempotent: every rule lives in chains of our own (EGRESSD-*),
# which are rebuilt whole and jumped to once, so running it again (a restarted
# agent, a changed CIDR) never duplicates a rule and never leaves an old one.
# remove deletes the jumps and the chains; status prints them (exit 1 when
# not installed). IPv4 and IPv6 CIDRs go to iptables and ip6tables.
#
# UDP 443 from the pods is refused (ICMP port unreachable, not a silent drop)
# so HTTP/3 clients fall back to TCP at once, where the agent sees them.
#
# Environment: IPTABLES_BACKEND=nft|legacy picks iptables-nft or
# iptables-legacy; it must match what the node's kube-proxy and CNI use
# (default: whatever `iptables` is).
set -eu

usage() {
  sed -n '/^#   egressd-node-rules/,/^#   --no-quic/p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[ $# -ge 1 ] || usage
action=$1
shift
pod_cidrs4="" pod_cidrs6="" pod_ifs="" exempt4="" exempt6=""
port=15001 mark=42 quic_block=1

is_v6() { case $1 in *:*) return 0 ;; *) return 1 ;; esac; }
need() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "egressd-node-rules: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case $1 in
    --pod-cidr) need "$@"; if is_v6 "$2"; then pod_cidrs6="$pod_cidrs6 $2"; else pod_cidrs4="$pod_cidrs4 $2"; fi; shift 2 ;;
    --pod-interface) need "$@"; pod_ifs="$pod_ifs $2"; shift 2 ;;
    --exempt) need "$@"; if is_v6 "$2"; then exempt6="$exempt6 $2"; else exempt4="$exempt4 $2"; fi; shift 2 ;;
    --port) need "$@"; port=$2; shift 2 ;;
    --mark) need "$@"; mark=$2; shift 2 ;;
    --no-quic-block) quic_block=0; shift ;;
    -h|--help) usage ;;
    *) echo "egressd-node-rules: unknown option $1" >&2; usage ;;
  esac
done
case $port in ''|*[!0-9]*) echo "egressd-node-rules: --port must be a number" >&2; exit 2 ;; esac
case $mark in ''|*[!0-9]*) echo "egressd-node-rules: --mark must be a number" >&2; exit 2 ;; esac

case ${IPTABLES_BACKEND:-} in
  nft) ipt4=iptables-nft ipt6=ip6tables-nft ;;
  legacy) ipt4=iptables-legacy ipt6=ip6tables-legacy ;;
  '') ipt4=iptables ipt6=ip6tables ;;
  *) echo "egressd-node-rules: IPTABLES_BACKEND must be nft or legacy" >&2; exit 2 ;;
esac

NAT_CHAIN=EGRESSD-REDIRECT
FILTER_CHAIN=EGRESSD-QUIC

# $1 = iptables binary, $2 = table, $3 = chain: creates it or empties it.
fresh_chain() {
  "$1" -w -t "$2" -N "$3" 2>/dev/null || "$1" -w -t "$2" -F "$3"
}

# $1 = binary, $2 = table, $3 = built-in chain, $4 = our chain: jump once.
jump_once() {
  "$1" -w -t "$2" -C "$3" -j "$4" 2>/dev/null || "$1" -w -t "$2" -I "$3" 1 -j "$4"
}

# $1 = binary, $2 = table, $3 = built-in chain, $4 = our chain.
drop_chain() {
  while "$1" -w -t "$2" -D "$3" -j "$4" 2>/dev/null; do :; done
  "$1" -w -t "$2" -F "$4" 2>/dev/null || true
  "$1" -w -t "$2" -X "$4" 2>/dev/null || true
}

# $1 = binary, $2 = pod CIDRs of its family, $3 = exempt CIDRs of its family.
install_family() {
  ipt=$1 cidrs=$2 exempt=$3
  # Nothing to match in this family (no CIDR of it, no interface): no rules.
  if [ -z "$cidrs" ] && [ -z "$pod_ifs" ]; then
    drop_chain "$ipt" nat PREROUTING "$NAT_CHAIN"
    drop_chain "$ipt" filter FORWARD "$FILTER_CHAIN"
    return 0
  fi
  fresh_chain "$ipt" nat "$NAT_CHAIN"
  # The agent's own packets (upstream.mark) never loop back into it, even
  # where a CNI hairpins node traffic back through PREROUTING.
  if [ "$mark" != 0 ]; then
    "$ipt" -w -t nat -A "$NAT_CHAIN" -m mark --mark "$mark" -j RETURN
  fi
  for d in $exempt; do
    "$ipt" -w -t nat -A "$NAT_CHAIN" -d "$d" -j RETURN
  done
  for s in $cidrs; do
    "$ipt" -w -t nat -A "$NAT_CHAIN" -s "$s" -p tcp -j REDIRECT --to-ports "$port"
  done
  for i in $pod_ifs; do
    "$ipt" -w -t nat -A "$NAT_CHAIN" -i "$i" -p tcp -j REDIRECT --to-ports "$port"
  done
  jump_once "$ipt" nat PREROUTING "$NAT_CHAIN"

  if [ "$quic_block" = 1 ]; then
    fresh_chain "$ipt" filter "$FILTER_CHAIN"
    for d in $exempt; do
      "$ipt" -w -t filter -A "$FILTER_CHAIN" -d "$d" -j RETURN
    done
    if [ "$ipt" = "$ipt4" ]; then reject=icmp-port-unreachable; else reject=icmp6-port-unreachable; fi
    for s in $cidrs; do
      "$ipt" -w -t filter -A "$FILTER_CHAIN" -s "$s" -p udp --dport 443 -j REJECT --reject-with "$reject"
    done
    for i in $pod_ifs; do
      "$ipt" -w -t filter -A "$FILTER_CHAIN" -i "$i" -p udp --dport 443 -j REJECT --reject-with "$reject"
    done
    jump_once "$ipt" filter FORWARD "$FILTER_CHAIN"
  else
    drop_chain "$ipt" filter FORWARD "$FILTER_CHAIN"
  fi
}

status_family() {
  "$1" -w -t nat -S "$NAT_CHAIN" 2>/dev/null || return 1
  "$1" -w -t nat -C PREROUTING -j "$NAT_CHAIN" 2>/dev/null || return 1
  "$1" -w -t filter -S "$FILTER_CHAIN" 2>/dev/null || true
}

case $action in
  install)
    if [ -z "$pod_cidrs4$pod_cidrs6$pod_ifs" ]; then
      echo "egressd-node-rules: install needs --pod-cidr or --pod-interface" >&2
      exit 2
    fi
    install_family "$ipt4" "$pod_cidrs4" "$exempt4"
    if [ -n "$pod_cidrs6" ] || [ -n "$exempt6" ] || { [ -n "$pod_ifs" ] && "$ipt6" -w -t nat -S >/dev/null 2>&1; }; then
      install_family "$ipt6" "$pod_cidrs6" "$exempt6"
    fi
    echo "egressd-node-rules: installed (TCP to :$port, mark $mark exempt, quic block $quic_block)"
    ;;
  remove)
    for ipt in "$ipt4" "$ipt6"; do
      "$ipt" -w -t nat -S >/dev/null 2>&1 || continue
      drop_chain "$ipt" nat PREROUTING "$NAT_CHAIN"
      drop_chain "$ipt" filter FORWARD "$FILTER_CHAIN"
    done
    echo "egressd-node-rules: removed"
    ;;
  status)
    rc=1
    for ipt in "$ipt4" "$ipt6"; do
      if status_family "$ipt"; then rc=0; fi
    done
    exit $rc
    ;;
  *) usage ;;
esac
