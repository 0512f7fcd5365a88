#!/bin/bash
# Never hang, fail loudly, with real processes over libfabric:
#  - kill -9 one rank in the middle of large all-reduces: every other rank
#    prints an error naming it (rank and host) and exits non-zero within the
#    deadline;
#  - two ranks call different counts: a clear mismatch error on every rank.
source "$YK_SOURCE_DIR/tests/lib.sh"
source "$YK_SOURCE_DIR/tests/collectives/procs.sh"
T=$(mktemp -d /tmp/yk_coll_fault.XXXXXX)
TMO=3000
kill_test() {
  local prov=$1 n=$2 victim=$3 dir="$T/kill-${1//;/_}-$2"
  launch $n "$dir" loop --transport libfabric --provider "$prov" --timeout-ms $TMO --seconds 60
  # wait until every rank is looping, then let a few all-reduces run
  for _ in $(seq 1 100); do
    [ "$(cat "$dir"/rank*.log 2>/dev/null | grep -c looping)" = "$n" ] && break; sleep 0.1
  done
  sleep 0.7
  local t0; t0=$(date +%s.%N)
  kill -9 "${PIDS[$victim]}"
  wait_all
  rm -f /dev/shm/yk"${PIDS[$victim]}"_* # the killed rank cannot remove its shm region
  local t1; t1=$(date +%s.%N)
  local el; el=$(echo "$t1 - $t0" | bc)
  local ok=1
  for ((i = 0; i < n; i++)); do
    [ $i = $victim ] && continue
    if [ "${RCS[$i]}" = 0 ] || [ "${RCS[$i]}" -ge 128 ]; then ok=0; echo "rank $i exit ${RCS[$i]}"; fi
    grep -q "rank $victim (host $(hostname)" "$dir/rank$i.log" || { ok=0; echo "rank $i log:"; cat "$dir/rank$i.log"; }
  done
  # everyone done within the deadline (+1 s for process exit and scheduling)
  if [ $ok = 1 ] && [ "$(echo "$el < $TMO / 1000 + 1" | bc)" = 1 ]; then
    pass "kill -9 rank $victim of $n over $prov: all others named it in ${el}s: $(grep ERROR "$dir/rank0.log" "$dir/rank1.log" | head -1 | cut -c1-200)"
  else
    fail "kill -9 rank $victim of $n over $prov (elapsed ${el}s): $(grep -h ERROR "$dir"/rank*.log | cut -c1-200)"
  fi
}
kill_test shm 4 2
kill_test "tcp;ofi_rxm" 3 1

mismatch_test() {
  local prov=$1 n=$2 dir="$T/mm-${1//;/_}-$2"
  launch $n "$dir" mismatch --transport libfabric --provider "$prov" --timeout-ms 10000
  wait_all
  local ok=1
  for ((i = 0; i < n; i++)); do
    [ "${RCS[$i]}" = 3 ] || ok=0
    grep -q "mismatched collectives.*count 1000.*count 2000\|mismatched collectives.*count 2000.*count 1000" "$dir/rank$i.log" || ok=0
  done
  if [ $ok = 1 ]; then pass "mismatch over $prov, $n ranks: $(grep ERROR "$dir/rank0.log" | cut -c1-220)"
  else fail "mismatch over $prov: exit ${RCS[*]}: $(cat "$dir"/rank*.log)"; fi
}
mismatch_test shm 2
mismatch_test shm 4
rm -rf "$T"
finish
