#!/usr/bin/env bash
# OpenMPI launch: rank/world/local rank from OMPI_COMM_WORLD_*, rank 0
# embeds the coordinator on coord.port, the secret comes with -x YOKE_SECRET.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/lib-daemon.sh"
export YOKE_SECRET=$(openssl rand -hex 32)
HB="--set coord.heartbeat_ms=200 --set coord.heartbeat_timeout_ms=2000"
MPI="mpirun --mca btl self,vader -x YOKE_SECRET"

port=$(free_port)
out=$YK_TMP/np2.log
timeout 60 $MPI -np 2 "$YOKE" $YK_WORKLOAD $HB --set coord.port=$port > "$out" 2>&1; rc=$?
[ $rc = 0 ] && pass "mpirun -np 2 exits 0" || fail "mpirun -np 2: exit $rc: $(tail -5 "$out")"
grep -q "all 2 ranks registered" "$out" && pass "np 2: rank 0 embedded the coordinator" || fail "np 2: no rendezvous"
[ "$(grep -c 'joined job' "$out")" = 2 ] && pass "np 2: both ranks joined" || fail "np 2: joins: $(grep -c 'joined job' "$out")"

port=$(free_port)
out=$YK_TMP/np4.log
timeout 60 $MPI -np 4 --oversubscribe --bind-to none "$YOKE" $YK_WORKLOAD $HB --set coord.port=$port > "$out" 2>&1; rc=$?
[ $rc = 0 ] && pass "mpirun -np 4 --oversubscribe exits 0" || fail "mpirun -np 4: exit $rc: $(tail -5 "$out")"
for r in 0 1 2 3; do
  grep -q "as rank $r of 4" "$out" || { fail "np 4: rank $r did not join"; continue; }
  pass "np 4: rank $r joined"
done

# status from rank 0's embedded coordinator, then --stop ends the job
port=$(free_port)
out=$YK_TMP/stop.log
$MPI -np 2 --oversubscribe --bind-to none "$YOKE" $YK_WORKLOAD_LONG $HB --set coord.port=$port > "$out" 2>&1 &
M=$!
wait_for "all 2 ranks registered" "$out" 30 || fail "stop: no rendezvous"
sleep 0.5
st=$("$YOKE" status --coord 127.0.0.1:$port 2>&1)
echo "$st" | grep -qE "world 2 +alive 2" && pass "status from rank 0's embedded coordinator" || fail "status: $st"
"$YOKE" status --coord 127.0.0.1:$port --stop > /dev/null 2>&1
t0=$(now_ms)
wait $M; rc=$?
dt=$(( $(now_ms) - t0 ))
[ $rc != 0 ] && [ $dt -lt 3000 ] && [ "$(grep -c 'stop requested by' "$out")" -ge 2 ] && pass "status --stop ended the mpirun job in ${dt} ms (exit $rc)" \
  || fail "status --stop: exit $rc after ${dt} ms: $(tail -3 "$out")"

# a missing secret is one clear line and exit 2, not a hang
out=$YK_TMP/nosecret.log
( unset YOKE_SECRET; timeout 30 mpirun -np 2 "$YOKE" $YK_WORKLOAD --set coord.port=$(free_port) > "$out" 2>&1 ); rc=$?
[ $rc = 2 ] && grep -q "no job secret" "$out" && pass "no secret: exit 2 with a clear message" || fail "no secret: exit $rc: $(tail -3 "$out")"

# kill -9 of one rank under mpirun: everything ends within heartbeat_timeout + 2 s
port=$(free_port)
out=$YK_TMP/kill.log
$MPI -np 3 --oversubscribe --bind-to none "$YOKE" $YK_WORKLOAD_LONG $HB --set coord.port=$port > "$out" 2>&1 &
M=$!
wait_for "all 3 ranks registered" "$out" 30 || fail "mpirun kill: no rendezvous"
sleep 0.5
victim=""
for p in $(pgrep -f "coord.port=$port"); do
  [ "$(tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -x 'OMPI_COMM_WORLD_RANK=2')" ] && victim=$p
done
ranks=$(pgrep -f "coord.port=$port" | grep -v "^$M\$")
if [ -n "$victim" ]; then
  t0=$(now_ms)
  kill -9 "$victim"
  wait $M; rc=$?
  dt=$(( $(now_ms) - t0 ))
  [ $rc != 0 ] && pass "mpirun reports the failure (exit $rc)" || fail "mpirun exit 0 after kill -9"
  [ $dt -le 4000 ] && pass "mpirun job ended ${dt} ms after kill -9" || fail "mpirun job took ${dt} ms"
  sleep 0.2
  pids_gone $ranks && pass "mpirun: no rank left behind" || fail "mpirun: left: $(ps -o pid,args -p $ranks)"
else
  fail "mpirun kill: no victim found"; kill $M
fi
finish
