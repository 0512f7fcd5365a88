#!/usr/bin/env bash
# Hosts on this machine: K network namespaces joined by veth links to one
# bridge (a star around a switch), each link optionally shaped with tc tbf
# in both directions. The one home of namespace hosts: tests/daemon/netns.sh
# and `yoke bench scale --hosts` both use it.
#
#   nshosts.sh up PREFIX K [MBIT]   hosts PREFIXh0..h{K-1} at 198.18.0.{1..K}/24
#                                   on eth0, switch PREFIXhub (bridge br0);
#                                   MBIT > 0 shapes every link to MBIT Mbit/s
#   nshosts.sh shape PREFIX K MBIT  change the rate (0: unshaped)
#   nshosts.sh down PREFIX          kill what runs in PREFIXh<i> and PREFIXhub, delete them
#   nshosts.sh sweep BASE           `down` of every BASE<pid>* set whose pid is gone
#                                   (what a killed earlier run left behind)
#   nshosts.sh exec PREFIX PPN RANK CMD...
#                                   run CMD as rank RANK on host RANK/PPN (the
#                                   local launcher's --wrap): YOKE_HOSTNAME,
#                                   YOKE_LOCAL_RANK and YOKE_LOCAL_WORLD of that host
#   nshosts.sh bytes PREFIX K       bytes sent by all hosts' eth0 so far
#
# Needs root and iproute2. Every veth is created inside its namespaces (never
# in the caller's), so deleting the namespaces removes every link.
set -u
say() { echo "nshosts: $*" >&2; }

# shape NS DEV MBIT: tbf on DEV's egress. The bucket holds 1 ms at the rate
# (at least 64 KiB: veth passes GSO packets of up to 64 KiB, and a bucket
# smaller than a packet stalls it); 20 ms of queue before drops, as a
# switch port's buffer.
shape() {
  local ns=$1 dev=$2 mbit=$3
  if [ "$mbit" = 0 ]; then
    ip -n "$ns" link show "$dev" > /dev/null || return 1
    tc -n "$ns" qdisc del dev "$dev" root 2> /dev/null
    return 0
  fi
  local burst=$((mbit * 1000 / 8))
  [ $burst -lt 65536 ] && burst=65536
  tc -n "$ns" qdisc replace dev "$dev" root tbf rate "${mbit}mbit" burst "$burst" latency 20ms
}

up() {
  local pre=$1 k=$2 mbit=${3:-0} hub=${1}hub i
  ip netns add "$hub" && ip -n "$hub" link set lo up && ip -n "$hub" link add br0 type bridge &&
    ip -n "$hub" link set br0 up || return 1
  for ((i = 0; i < k; i++)); do
    local ns=${pre}h$i
    ip netns add "$ns" || return 1
    ip link add eth0 netns "$ns" type veth peer name "${pre}p$i" netns "$hub" || return 1
    ip -n "$hub" link set "${pre}p$i" master br0 && ip -n "$hub" link set "${pre}p$i" up || return 1
    ip -n "$ns" addr add "198.18.0.$((i + 1))/24" dev eth0 && ip -n "$ns" link set eth0 up &&
      ip -n "$ns" link set lo up || return 1
  done
  shape_all "$pre" "$k" "$mbit"
}

# both directions of each link: the host's eth0 (host -> switch) and the
# switch's port (switch -> host)
shape_all() {
  local pre=$1 k=$2 mbit=$3 i
  for ((i = 0; i < k; i++)); do
    shape "${pre}h$i" eth0 "$mbit" && shape "${pre}hub" "${pre}p$i" "$mbit" || return 1
  done
}

down() {
  local pre=$1 n p
  [ ${#pre} -ge 3 ] || { say "refusing a prefix shorter than 3 characters: '$pre'"; return 2; }
  # exactly PREFIXh<i> and PREFIXhub: prefix yk12 must not take yk123's hosts
  for n in $(ip netns list 2> /dev/null | awk '{print $1}' | grep -E "^$pre(h[0-9]+|hub)\$"); do
    for p in $(ip netns pids "$n" 2> /dev/null); do kill -9 "$p" 2> /dev/null; done
    ip netns del "$n" 2> /dev/null
  done
  return 0
}

sweep() {
  local base=$1 pid
  for pid in $(ip netns list 2> /dev/null | awk '{print $1}' | sed -n "s/^$base\([0-9][0-9]*\)\(h[0-9]*\|hub\)\$/\1/p" | sort -u); do
    if [ ! -d "/proc/$pid" ]; then
      say "removing hosts $base$pid* left by a run that no longer exists (pid $pid)"
      down "$base$pid"
    fi
  done
}

bytes() {
  local pre=$1 k=$2 i sum=0 b
  for ((i = 0; i < k; i++)); do
    b=$(ip netns exec "${pre}h$i" cat /sys/class/net/eth0/statistics/tx_bytes) || return 1
    sum=$((sum + b))
  done
  echo $sum
}

case "${1:-}" in
  up) [ $# -ge 3 ] || exec "$0"; up "$2" "$3" "${4:-0}" ;;
  shape) [ $# -eq 4 ] || exec "$0"; shape_all "$2" "$3" "$4" ;;
  down) [ $# -eq 2 ] || exec "$0"; down "$2" ;;
  sweep) [ $# -eq 2 ] || exec "$0"; sweep "$2" ;;
  bytes) [ $# -eq 3 ] || exec "$0"; bytes "$2" "$3" ;;
  exec)
    [ $# -ge 5 ] || exec "$0"
    pre=$2 ppn=$3 rank=$4
    shift 4
    h=$((rank / ppn))
    exec ip netns exec "${pre}h$h" env YOKE_HOSTNAME="host$h" YOKE_LOCAL_RANK=$((rank % ppn)) YOKE_LOCAL_WORLD="$ppn" "$@"
    ;;
  *)
    echo "usage: $0 up PREFIX K [MBIT] | shape PREFIX K MBIT | down PREFIX | sweep BASE | exec PREFIX PPN RANK CMD... | bytes PREFIX K" >&2
    exit 2
    ;;
esac
