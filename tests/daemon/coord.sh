#!/usr/bin/env bash
# `yoke coord` standalone with ranks started by hand (YOKE_* variables):
# a rank that goes silent (SIGSTOP) is declared dead after the heartbeat
# timeout and the others stop naming it; a coordinator that dies or goes
# silent makes every rank exit with a clear message; nothing hangs.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/lib-daemon.sh"
export YOKE_SECRET=$(openssl rand -hex 32)
HB="--set coord.heartbeat_ms=200 --set coord.heartbeat_timeout_ms=2000"

# start_job N LOG: `yoke coord` + N ranks; sets COORD and RANKS (pids)
start_job() {
  local n=$1 log=$2 r
  local port; port=$(free_port)
  "$YOKE" coord --world "$n" --port "$port" $HB > "$log.coord" 2>&1 &
  COORD=$!
  YK_CLEANUP+=("kill -9 $COORD")
  wait_for "listening on" "$log.coord" 10
  RANKS=()
  for r in $(seq 0 $((n - 1))); do
    YOKE_RANK=$r YOKE_WORLD=$n YOKE_COORD=127.0.0.1:$port "$YOKE" $YK_WORKLOAD_LONG $HB > "$log.r$r" 2>&1 &
    RANKS+=($!)
    YK_CLEANUP+=("kill -9 $!")
  done
  wait_for "all $n ranks registered" "$log.coord" 20
}

# wait_all_exit SECONDS PID...: 0 if all exit in time
wait_all_exit() {
  local secs=$1; shift
  local i
  for i in $(seq $((secs * 20))); do pids_gone "$@" && return 0; sleep 0.05; done
  return 1
}

# 1. a rank that stops heartbeating (SIGSTOP keeps its socket open)
start_job 3 "$YK_TMP/stop"
kill -STOP "${RANKS[1]}"
t0=$(now_ms)
wait_all_exit 6 "${RANKS[0]}" "${RANKS[2]}" && dt=$(( $(now_ms) - t0 )) && \
  { [ $dt -le 4000 ] && pass "silent rank: others exited in ${dt} ms (limit 4000)" || fail "silent rank: ${dt} ms"; } \
  || fail "silent rank: others still running"
grep -q "rank 1 (host .*) died: no heartbeat for" "$YK_TMP/stop.coord" && pass "coordinator: rank 1 declared dead by timeout" \
  || fail "coordinator did not declare rank 1 dead: $(tail -3 "$YK_TMP/stop.coord")"
for r in 0 2; do
  grep -q "job aborted: rank 1 (host $(hostname)" "$YK_TMP/stop.r$r" && pass "rank $r names rank 1 and its host" || fail "rank $r: $(tail -2 "$YK_TMP/stop.r$r")"
  wait "${RANKS[$r]}"; rc=$?
  [ $rc = 3 ] && pass "rank $r exit code 3 (peer dead)" || fail "rank $r exit $rc, wanted 3"
done
kill -9 "${RANKS[1]}"; kill -CONT "${RANKS[1]}" 2>/dev/null
wait_all_exit 5 "$COORD" && pass "coordinator exits after the job ends" || fail "coordinator still running"
wait "$COORD"; rc=$?
[ $rc = 3 ] && pass "coordinator exit code 3" || fail "coordinator exit $rc"

# 2. the coordinator dies: every rank notices and exits 4
start_job 2 "$YK_TMP/cdie"
kill -9 "$COORD"
t0=$(now_ms)
wait_all_exit 6 "${RANKS[@]}" && pass "coordinator killed: ranks exited in $(( $(now_ms) - t0 )) ms" || fail "ranks still running"
for r in 0 1; do
  wait "${RANKS[$r]}"; rc=$?
  [ $rc = 4 ] && grep -q "lost the connection to the coordinator" "$YK_TMP/cdie.r$r" && pass "rank $r: exit 4, coordinator lost" \
    || fail "rank $r: exit $rc: $(tail -2 "$YK_TMP/cdie.r$r")"
done

# 3. the coordinator hangs (SIGSTOP): heartbeat acks stop, ranks exit 4
start_job 2 "$YK_TMP/chang"
kill -STOP "$COORD"
t0=$(now_ms)
wait_all_exit 6 "${RANKS[@]}" && dt=$(( $(now_ms) - t0 )) && \
  { [ $dt -le 4000 ] && pass "coordinator silent: ranks exited in ${dt} ms" || fail "coordinator silent: ${dt} ms"; } || fail "ranks still running"
for r in 0 1; do
  wait "${RANKS[$r]}"; rc=$?
  [ $rc = 4 ] && grep -q "sent nothing for" "$YK_TMP/chang.r$r" && pass "rank $r: exit 4, coordinator silent" \
    || fail "rank $r: exit $rc: $(tail -2 "$YK_TMP/chang.r$r")"
done
kill -9 "$COORD"; kill -CONT "$COORD" 2>/dev/null

# 4. a rank that never gets its peers: bounded rendezvous, exit 5
port=$(free_port)
"$YOKE" coord --world 2 --port "$port" --rendezvous-timeout-ms 3000 > "$YK_TMP/rdv.coord" 2>&1 &
C=$!
sleep 0.3
YOKE_RANK=0 YOKE_WORLD=2 YOKE_COORD=127.0.0.1:$port "$YOKE" $YK_WORKLOAD > "$YK_TMP/rdv.r0" 2>&1; rc=$?
wait $C; crc=$?
[ $crc = 5 ] && pass "coordinator gives up the rendezvous with exit 5" || fail "coordinator rendezvous exit $crc: $(cat "$YK_TMP/rdv.coord")"
[ $rc = 5 ] && grep -q "1 of 2 ranks never registered: 1" "$YK_TMP/rdv.r0" && pass "the lone rank exits 5 naming the missing rank" \
  || fail "lone rank exit $rc: $(tail -2 "$YK_TMP/rdv.r0")"

# 5. Ctrl-C while waiting for peers ends the rendezvous at once with 130
port=$(free_port)
YOKE_RANK=1 YOKE_WORLD=2 YOKE_COORD=127.0.0.1:$port "$YOKE" $YK_WORKLOAD > "$YK_TMP/int.r1" 2>&1 &
P=$!
sleep 0.5
kill -INT $P
t0=$(now_ms)
wait $P; rc=$?
dt=$(( $(now_ms) - t0 ))
[ $rc = 130 ] && [ $dt -lt 1500 ] && grep -q "interrupted by Interrupt during rendezvous" "$YK_TMP/int.r1" \
  && pass "SIGINT during rendezvous: exit 130 in ${dt} ms" || fail "SIGINT during rendezvous: exit $rc in ${dt} ms: $(tail -2 "$YK_TMP/int.r1")"
finish
