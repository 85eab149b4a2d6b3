#!/bin/sh
# egressd-tproxy-rules: TPROXY interception and its policy routing on a
# dedicated egress node. The tproxy-egress-nodes overlay runs this file from
# the image, and the integration world's tproxy interception
# (test/integration/world.py) runs the same file.
#
#   egressd-tproxy-rules install|remove|status [options]
#
#   --source CIDR        TCP from these sources is intercepted (repeatable)
#   --in-interface IF    ...or arriving on these interfaces (repeatable)
#   --exempt CIDR        destinations never intercepted (repeatable)
#   --port PORT          egressd's tproxy listener (default 15002)
#   --mark MARK          the fwmark that routes intercepted packets to the
#                        local stack (default 1)
#   --table TABLE        the routing table holding the local route (default 100)
#
# The mangle chain EGRESSD-TPROXY sends matching TCP to the listener and
# marks it; `ip rule fwmark MARK lookup TABLE` with `local default dev lo` in
# TABLE delivers the marked packets to the local socket although their
# destination is not an address of this host. Packets of connections egressd
# already holds (-m socket --transparent) are marked without another TPROXY
# lookup. install is idempotent (chains rebuilt whole, rule and route added
# once); remove undoes all of it; status exits 1 when not installed. IPv4 and
# IPv6 are both set up (IPv6 only where ip6tables works).
#
# Environment: IPTABLES_BACKEND=nft|legacy, as for egressd-node-rules.
set -eu

usage() {
  sed -n '/^#   egressd-tproxy-rules/,/^#   --table/p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[ $# -ge 1 ] || usage
action=$1
shift
sources4="" sources6="" in_ifs="" exempt4="" exempt6=""
port=15002 mark=1 table=100

is_v6() { case $1 in *:*) return 0 ;; *) return 1 ;; esac; }
need() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "egressd-tproxy-rules: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case $1 in
    --source) need "$@"; if is_v6 "$2"; then sources6="$sources6 $2"; else sources4="$sources4 $2"; fi; shift 2 ;;
    --in-interface) need "$@"; in_ifs="$in_ifs $2"; shift 2 ;;
    --exempt) need "$@"; if is_v6 "$2"; then exempt6="$exempt6 $2"; else exempt4="$exempt4 $2"; fi; shift 2 ;;
    --port) need "$@"; port=$2; shift 2 ;;
    --mark) need "$@"; mark=$2; shift 2 ;;
    --table) need "$@"; table=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "egressd-tproxy-rules: unknown option $1" >&2; usage ;;
  esac
done
for n in "$port" "$mark" "$table"; do
  case $n in ''|*[!0-9]*) echo "egressd-tproxy-rules: --port, --mark and --table take numbers" >&2; exit 2 ;; esac
done
[ "$mark" != 0 ] || { echo "egressd-tproxy-rules: --mark must not be 0" >&2; exit 2; }

case ${IPTABLES_BACKEND:-} in
  nft) ipt4=iptables-nft ipt6=ip6tables-nft ;;
  legacy) ipt4=iptables-legacy ipt6=ip6tables-legacy ;;
  '') ipt4=iptables ipt6=ip6tables ;;
  *) echo "egressd-tproxy-rules: IPTABLES_BACKEND must be nft or legacy" >&2; exit 2 ;;
esac

CHAIN=EGRESSD-TPROXY

remove_family() {  # $1 = iptables binary, $2 = -4|-6
  while "$1" -w -t mangle -D PREROUTING -j "$CHAIN" 2>/dev/null; do :; done
  "$1" -w -t mangle -F "$CHAIN" 2>/dev/null || true
  "$1" -w -t mangle -X "$CHAIN" 2>/dev/null || true
  while ip "$2" rule del fwmark "$mark" lookup "$table" 2>/dev/null; do :; done
  ip "$2" route flush table "$table" 2>/dev/null || true
}

install_family() {  # $1 = binary, $2 = -4|-6, $3 = sources, $4 = exempt
  ipt=$1 fam=$2 sources=$3 exempt=$4
  if [ -z "$sources" ] && [ -z "$in_ifs" ]; then
    remove_family "$ipt" "$fam"
    return 0
  fi
  "$ipt" -w -t mangle -N "$CHAIN" 2>/dev/null || "$ipt" -w -t mangle -F "$CHAIN"
  for d in $exempt; do
    "$ipt" -w -t mangle -A "$CHAIN" -d "$d" -j RETURN
  done
  # Packets of a connection egressd already accepted: route them locally.
  "$ipt" -w -t mangle -A "$CHAIN" -p tcp -m socket --transparent -j MARK --set-mark "$mark"
  "$ipt" -w -t mangle -A "$CHAIN" -p tcp -m socket --transparent -j RETURN
  for s in $sources; do
    "$ipt" -w -t mangle -A "$CHAIN" -s "$s" -p tcp -j TPROXY --on-port "$port" --tproxy-mark "$mark/$mark"
  done
  for i in $in_ifs; do
    "$ipt" -w -t mangle -A "$CHAIN" -i "$i" -p tcp -j TPROXY --on-port "$port" --tproxy-mark "$mark/$mark"
  done
  "$ipt" -w -t mangle -C PREROUTING -j "$CHAIN" 2>/dev/null || "$ipt" -w -t mangle -I PREROUTING 1 -j "$CHAIN"
  ip "$fam" rule show | grep -q "fwmark $(printf '0x%x' "$mark") lookup $table" \
    || ip "$fam" rule add fwmark "$mark" lookup "$table"
  if [ "$fam" = -4 ]; then dst=0.0.0.0/0; else dst=::/0; fi
  ip "$fam" route replace local "$dst" dev lo table "$table"
}

case $action in
  install)
    if [ -z "$sources4$sources6$in_ifs" ]; then
      echo "egressd-tproxy-rules: install needs --source or --in-interface" >&2
      exit 2
    fi
    install_family "$ipt4" -4 "$sources4" "$exempt4"
    if "$ipt6" -w -t mangle -S >/dev/null 2>&1; then
      install_family "$ipt6" -6 "$sources6" "$exempt6"
    fi
    echo "egressd-tproxy-rules: installed (TCP to :$port, fwmark $mark, table $table)"
    ;;
  remove)
    remove_family "$ipt4" -4
    if "$ipt6" -w -t mangle -S >/dev/null 2>&1; then remove_family "$ipt6" -6; fi
    echo "egressd-tproxy-rules: removed"
    ;;
  status)
    "$ipt4" -w -t mangle -S "$CHAIN" 2>/dev/null || exit 1
    "$ipt4" -w -t mangle -C PREROUTING -j "$CHAIN" 2>/dev/null || exit 1
    ip -4 rule show | grep "lookup $table" || exit 1
    ip -4 route show table "$table" | grep -q local || exit 1
    ;;
  *) usage ;;
esac
