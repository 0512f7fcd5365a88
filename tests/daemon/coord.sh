#!/usr/bin/env bash
# `yoke coord` standalone with ranks started by hand (YOKE_* variables):
# a rank that goes silent (SIGSTOP) is declared dead after the heartbeat
# timeout, neither much later nor earlier, and the others stop naming it; a
# rank paused for 0.6x the timeout is not declared dead; a coordinator that
# dies or goes silent makes every rank exit with a clear message; nothing
# hangs.
#
# Heartbeat bounds. Heartbeats every HB_MS=200, timeout TO_MS=4000. A rank's
# last heartbeat before the pause is at most HB_MS old, and the coordinator
# looks every min(TO_MS/10, 200) ms, so it declares the rank dead between
# TO_MS - HB_MS and TO_MS + HB_MS after the pause, with an age ("no heartbeat
# for N ms") in (TO_MS, TO_MS + HB_MS]. The test allows TO_MS +- (2 x HB_MS
# + SLACK_MS), SLACK_MS=1200 for a loaded 2-core machine (late timers and
# heartbeats), and N in (TO_MS, TO_MS + 2 x HB_MS + SLACK_MS]: 2400..5600 ms
# and 4000 < N <= 5600. A timeout 1.5x too long logs N >= 6000 (and is
# declared 5800 ms or more after the pause unless the last heartbeat was
# late); one 4x too short declares the paused rank near 1000 ms, and the
# rank paused for 2400 ms (0.6x) dead. Same bounds for the ranks' side (the
# coordinator paused: "sent nothing for N ms").
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/lib-daemon.sh"
export YOKE_SECRET=$(openssl rand -hex 32)
HB_MS=200 TO_MS=4000 SLACK_MS=1200
HB="--set coord.heartbeat_ms=$HB_MS --set coord.heartbeat_timeout_ms=$TO_MS"
DET_LO=$((TO_MS - 2 * HB_MS - SLACK_MS)) DET_HI=$((TO_MS + 2 * HB_MS + SLACK_MS))

# log_ms LINE: the time (ms since the epoch) a log line was written
log_ms() { local ts=${1%% *}; [ -n "$ts" ] && date -d "$ts" +%s%3N 2>/dev/null; }

# check_detect WHAT FILE REGEX T0: the first line of FILE matching REGEX says
# "... for N ms (coord.heartbeat_timeout_ms=TO_MS)"; it was logged DET_LO..DET_HI
# ms after T0 (ms since the epoch, when the silence began) and N is in
# (TO_MS, DET_HI].
check_detect() {
  local what=$1 file=$2 rx=$3 t0=$4 line at n to
  line=$(grep -m1 -E "$rx" "$file")
  at=$(log_ms "$line")
  n=$(echo "$line" | sed -n 's/.* for \([0-9]*\) ms (coord.heartbeat_timeout_ms=[0-9]*).*/\1/p')
  to=$(echo "$line" | sed -n 's/.*(coord.heartbeat_timeout_ms=\([0-9]*\)).*/\1/p')
  if ! is_num "$at" || ! is_num "$n"; then fail "$what: no timed detection line in $file: $(tail -2 "$file")"; return; fi
  local dt=$((at - t0))
  [ $dt -ge $DET_LO ] && [ $dt -le $DET_HI ] && pass "$what: detected ${dt} ms after the silence began (allowed $DET_LO..$DET_HI)" \
    || fail "$what: detected ${dt} ms after the silence began, allowed $DET_LO..$DET_HI (timeout $TO_MS, heartbeat $HB_MS)"
  [ "$n" -gt $TO_MS ] && [ "$n" -le $DET_HI ] && [ "$to" = $TO_MS ] && pass "$what: logged 'for $n ms' (timeout=$to), in ($TO_MS, $DET_HI]" \
    || fail "$what: logged 'for $n ms' (timeout=$to), wanted ($TO_MS, $DET_HI] and timeout=$TO_MS: $line"
}

# start_job N LOG [WORKLOAD]: `yoke coord` + N ranks running WORKLOAD
# (default YK_WORKLOAD_LONG); sets COORD and RANKS (pids)
start_job() {
  local n=$1 log=$2 work=${3:-$YK_WORKLOAD_LONG} r
  local port; port=$(free_port)
  "$YOKE" coord --world "$n" --port "$port" $HB > "$log.coord" 2>&1 &
  COORD=$!
  YK_CLEANUP+=("kill -9 $COORD")
  wait_for "listening on" "$log.coord" 10
  RANKS=()
  for r in $(seq 0 $((n - 1))); do
    YOKE_RANK=$r YOKE_WORLD=$n YOKE_COORD=127.0.0.1:$port "$YOKE" $work $HB > "$log.r$r" 2>&1 &
    RANKS+=($!)
    YK_CLEANUP+=("kill -9 $!")
  done
  wait_for "all $n ranks registered" "$log.coord" 20
}

# wait_all_exit SECONDS PID...: 0 if all exit in time; else kill -9 them (a
# later `wait` must not hang the test until ctest's timeout) and return 1
wait_all_exit() {
  local secs=$1; shift
  local i
  for i in $(seq $((secs * 20))); do pids_gone "$@" && return 0; sleep 0.05; done
  kill -9 "$@" 2>/dev/null; kill -CONT "$@" 2>/dev/null
  return 1
}

# 1. a rank that stops heartbeating (SIGSTOP keeps its socket open)
start_job 3 "$YK_TMP/stop"
kill -STOP "${RANKS[1]}"
t0=$(now_ms)
wait_all_exit $(( DET_HI / 1000 + 4 )) "${RANKS[0]}" "${RANKS[2]}" && dt=$(( $(now_ms) - t0 )) && \
  { [ $dt -le $((DET_HI + 1000)) ] && pass "silent rank: others exited in ${dt} ms (limit $((DET_HI + 1000)))" || fail "silent rank: ${dt} ms"; } \
  || fail "silent rank: others still running"
grep -q "rank 1 (host .*) died: no heartbeat for" "$YK_TMP/stop.coord" && pass "coordinator: rank 1 declared dead by timeout" \
  || fail "coordinator did not declare rank 1 dead: $(tail -3 "$YK_TMP/stop.coord")"
check_detect "coordinator: silent rank 1" "$YK_TMP/stop.coord" "rank 1 \(host .*\) died: no heartbeat for" "$t0"
for r in 0 2; do
  grep -q "job aborted: rank 1 (host $(hostname)" "$YK_TMP/stop.r$r" && pass "rank $r names rank 1 and its host" || fail "rank $r: $(tail -2 "$YK_TMP/stop.r$r")"
  wait "${RANKS[$r]}"; rc=$?
  [ $rc = 3 ] && pass "rank $r exit code 3 (peer dead)" || fail "rank $r exit $rc, wanted 3"
done
kill -9 "${RANKS[1]}"; kill -CONT "${RANKS[1]}" 2>/dev/null
wait_all_exit 5 "$COORD" && pass "coordinator exits after the job ends" || fail "coordinator still running"
wait "$COORD"; rc=$?
[ $rc = 3 ] && pass "coordinator exit code 3" || fail "coordinator exit $rc"

# 1b. a rank paused for 0.6x the timeout is not dead: SIGCONT, and the job
#     (a finite one: 120 steps of 25 ms) finishes with every rank's exit 0
start_job 3 "$YK_TMP/pause" "daemon-selftest --steps 120 --step-ms 25"
kill -STOP "${RANKS[1]}"
t0=$(now_ms)
sleep "$(awk -v t=$TO_MS 'BEGIN { print 0.6 * t / 1000 }')"
st=$(awk '{print $3}' "/proc/${RANKS[1]}/stat" 2>/dev/null)
kill -CONT "${RANKS[1]}"
paused=$(( $(now_ms) - t0 ))
[ "$st" = T ] && pass "rank 1 was stopped for ${paused} ms ($((TO_MS * 6 / 10)) asked, timeout $TO_MS)" \
  || fail "rank 1 was not stopped during the pause (state '$st')"
wait_all_exit 30 "${RANKS[@]}" "$COORD" || fail "pause: the job did not finish within 30 s"
rcs=""
for r in 0 1 2; do wait "${RANKS[$r]}"; rcs="$rcs$?"; done
wait "$COORD"; crc=$?
[ "$rcs" = 000 ] && [ $crc = 0 ] && pass "paused rank: every rank and the coordinator exit 0" \
  || fail "paused ${paused} ms: rank exit codes $rcs, coordinator $crc: $(grep -hE 'died|ERROR' "$YK_TMP"/pause.* | head -3)"
grep -qE "died|dead" "$YK_TMP/pause.coord" && fail "paused ${paused} ms: coordinator declared a rank dead: $(grep -E 'died|dead' "$YK_TMP/pause.coord")" \
  || pass "paused ${paused} ms: no rank declared dead"

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
wait_all_exit $(( DET_HI / 1000 + 4 )) "${RANKS[@]}" && dt=$(( $(now_ms) - t0 )) && \
  { [ $dt -le $((DET_HI + 1000)) ] && pass "coordinator silent: ranks exited in ${dt} ms (limit $((DET_HI + 1000)))" \
    || fail "coordinator silent: ${dt} ms"; } || fail "ranks still running"
for r in 0 1; do
  wait "${RANKS[$r]}"; rc=$?
  [ $rc = 4 ] && grep -q "sent nothing for" "$YK_TMP/chang.r$r" && pass "rank $r: exit 4, coordinator silent" \
    || fail "rank $r: exit $rc: $(tail -2 "$YK_TMP/chang.r$r")"
  check_detect "rank $r: silent coordinator" "$YK_TMP/chang.r$r" "sent nothing for" "$t0"
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
