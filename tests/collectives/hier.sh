#!/usr/bin/env bash
# The hierarchical all-reduce across two "nodes": two network namespaces
# joined by a veth pair (198.18.1.1 and 198.18.1.2), two coll_mp processes in
# each, libfabric tcp;ofi_rxm between all ranks and the shared-memory board
# inside each node. Ranks 0,1 are on node A, 2,3 on node B (same host name,
# different network namespaces: different nodes). The check runs every
# algorithm, including the cost model's choice, which is hier above the
# one-shot size; exact results on every rank.
set -u
. "$(dirname "$0")/../lib.sh"
YK_TMP=$(mktemp -d /tmp/yk-hier-test.XXXXXX)
YK_CLEANUP=()
trap 'for c in "${YK_CLEANUP[@]}"; do eval "$c" >/dev/null 2>&1; done; rm -rf "$YK_TMP"' EXIT
need_netns "the hierarchical all-reduce test (two nodes as network namespaces)"
tag=$$
NS=(ykc${tag}a ykc${tag}b)
cleanup_ns() {
  local n p
  for n in "${NS[@]}"; do
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$n" 2>/dev/null
  done
}
YK_CLEANUP+=(cleanup_ns)
setup() {
  ip netns add "${NS[0]}" && ip netns add "${NS[1]}" || return 1
  ip link add "ykca$tag" type veth peer name "ykcb$tag" || return 1
  ip link set "ykca$tag" netns "${NS[0]}" && ip link set "ykcb$tag" netns "${NS[1]}" || return 1
  local i
  for i in 0 1; do
    local dev=$([ $i = 0 ] && echo "ykca$tag" || echo "ykcb$tag")
    ip -n "${NS[$i]}" link set "$dev" name eth0 && ip -n "${NS[$i]}" addr add "198.18.1.$((i + 1))/24" dev eth0 &&
      ip -n "${NS[$i]}" link set eth0 up && ip -n "${NS[$i]}" link set lo up || return 1
  done
}
if setup 2> "$YK_TMP/setup.err"; then pass "2 nodes (network namespaces) on a veth pair"
else fail "netns setup: $(cat "$YK_TMP/setup.err")"; finish; exit 1; fi

P="$YK_BUILD_DIR/tests/collectives/coll_mp"
D="$YK_TMP/rdv"
mkdir -p "$D"
run4() { # run4 NAME ARGS...: 4 ranks, 2 per node; logs in $YK_TMP/NAME.<rank>
  local name=$1; shift
  local pids=() r
  for r in 0 1 2 3; do
    FI_TCP_IFACE=eth0 timeout 120 ip netns exec "${NS[$((r / 2))]}" "$P" "$@" --bootstrap file --dir "$D/$name" \
      --job "$name" --rank $r --size 4 --transport libfabric --provider "tcp;ofi_rxm" --timeout-ms 30000 \
      > "$YK_TMP/$name.$r" 2>&1 &
    pids+=($!)
  done
  RCS=()
  for r in 0 1 2 3; do wait "${pids[$r]}"; RCS+=($?); done
}
mkdir -p "$D/check" "$D/reg" "$D/kill"
run4 check check --big
if [ "${RCS[*]}" = "0 0 0 0" ] && grep -q "hier" "$YK_TMP/check.0"; then pass "4 ranks on 2 nodes: $(head -1 "$YK_TMP/check.0")"
else fail "hier check: exit codes ${RCS[*]}: $(cat "$YK_TMP"/check.* | tail -6)"; fi
run4 reg check --big --register
if [ "${RCS[*]}" = "0 0 0 0" ] && grep -q "hier" "$YK_TMP/reg.0"; then pass "4 ranks on 2 nodes, registered buffers: $(head -1 "$YK_TMP/reg.0")"
else fail "hier check (registered): exit codes ${RCS[*]}: $(cat "$YK_TMP"/reg.* | tail -6)"; fi
# kill -9 of rank 3 (node B) in the middle of 64 MiB hierarchical all-reduces:
# every survivor fails within the deadline with an error that names it
pids=()
for r in 0 1 2 3; do
  FI_TCP_IFACE=eth0 timeout 120 ip netns exec "${NS[$((r / 2))]}" "$P" loop --seconds 60 --bootstrap file \
    --dir "$D/kill" --job kill --rank $r --size 4 --transport libfabric --provider "tcp;ofi_rxm" --timeout-ms 10000 \
    > "$YK_TMP/kill.$r" 2>&1 &
  pids+=($!)
done
mkdir -p "$D/kill"
for _ in $(seq 300); do grep -q looping "$YK_TMP/kill.3" 2>/dev/null && break; sleep 0.1; done
sleep 1
victim=$(for p in $(ip netns pids "${NS[1]}"); do tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null | grep -q -- "--rank 3 " && echo $p; done | head -1)
t0=$(date +%s)
[ -n "$victim" ] && kill -9 "$victim"
RCS=()
for r in 0 1 2; do wait "${pids[$r]}"; RCS+=($?); done
wait "${pids[3]}" 2>/dev/null
t1=$(date +%s)
named=0
for r in 0 1 2; do grep "ERROR" "$YK_TMP/kill.$r" | grep -qE "rank 3\b|ranks [0-9,]*3" && named=$((named + 1)); done
if [ -n "$victim" ] && [ "${RCS[*]}" = "3 3 3" ] && [ $named = 3 ] && [ $((t1 - t0)) -le 25 ]; then
  pass "kill -9 of rank 3 during hier all-reduces: ranks 0-2 failed in $((t1 - t0)) s ($named of 3 name rank 3): $(grep -h ERROR "$YK_TMP/kill.0" | head -1)"
else
  fail "kill during hier: victim '$victim', exit codes ${RCS[*]}, $((t1 - t0)) s: $(grep -h ERROR "$YK_TMP"/kill.* | head -3)"
fi
finish
