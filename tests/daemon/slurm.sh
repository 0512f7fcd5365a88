#!/usr/bin/env bash
# A real one-node SLURM cluster (tests/daemon/slurm-cluster.sh): `srun -n 2`
# and an `sbatch` job with cluster-configs/slurm/one-node.sbatch run to
# completion; ranks take rank/world/local rank from SLURM and find the
# coordinator on the first host of the node list.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/lib-daemon.sh"
here=$(cd "$(dirname "$0")" && pwd)
export YK_SLURM_DIR=$YK_TMP/slurm
YK_CLEANUP+=("bash $here/slurm-cluster.sh down $YK_SLURM_DIR")
need_slurm "the SLURM launch test"
if ! timeout 60 bash "$here/slurm-cluster.sh" up "$YK_SLURM_DIR" > /dev/null 2> "$YK_TMP/up.err"; then
  fail "slurm cluster did not come up: $(cat "$YK_TMP/up.err")"
  finish; exit 1
fi
pass "slurm cluster up (munged, slurmctld, slurmd)"
export SLURM_CONF=$YK_SLURM_DIR/slurm.conf
export YOKE_SECRET=$(openssl rand -hex 32)
printf 'coord:\n  heartbeat_ms: 200\n  heartbeat_timeout_ms: 2000\n' > "$YK_TMP/job.yaml"
cmd=${YK_WORKLOAD%% *} args=${YK_WORKLOAD#"$cmd"}

# srun -n 2
out=$YK_TMP/srun.log
timeout 60 srun -n 2 --time=2 "$YOKE" $cmd "$YK_TMP/job.yaml" $args --set coord.port=$(free_port) > "$out" 2>&1; rc=$?
[ $rc = 0 ] && pass "srun -n 2 exits 0" || fail "srun -n 2: exit $rc: $(tail -5 "$out")"
grep -q "all 2 ranks registered" "$out" && pass "srun: rank 0 embedded the coordinator on the first node" || fail "srun: no rendezvous"
for r in 0 1; do grep -q "as rank $r of 2" "$out" && pass "srun: rank $r joined" || fail "srun: rank $r missing"; done

# sbatch with the shipped one-node script (polled: `sbatch --wait` sleeps in
# long steps)
out=$YK_TMP/sbatch.out
jid=$(YOKE=$YOKE YOKE_CMD=$cmd timeout 30 sbatch --parsable --time=2 --output="$out" \
  "$YK_SOURCE_DIR/cluster-configs/slurm/one-node.sbatch" "$YK_TMP/job.yaml" $args 2> "$YK_TMP/sbatch.err")
state=""
for i in $(seq 300); do
  state=$(timeout 5 scontrol show job "$jid" 2>/dev/null | grep -oE 'JobState=[A-Z_]+' | head -1)
  case "$state" in JobState=PENDING|JobState=RUNNING|JobState=CONFIGURING|JobState=COMPLETING|"") sleep 0.2 ;; *) break ;; esac
done
[ "$state" = JobState=COMPLETED ] && pass "sbatch one-node.sbatch job $jid: $state" \
  || fail "sbatch job '$jid': '$state': $(cat "$YK_TMP/sbatch.err") $(tail -5 "$out" 2>/dev/null)"
grep -q "all 2 ranks registered" "$out" && pass "sbatch: 2 ranks rendezvoused" || fail "sbatch: no rendezvous in $(tail -5 "$out" 2>/dev/null)"
[ "$(grep -c 'joined job' "$out" 2>/dev/null)" = 2 ] && pass "sbatch: both ranks joined" || fail "sbatch: joins"

# An elastic job under srun --no-kill, the coordinator its own process
# (cluster-configs/slurm/elastic.sbatch does the same on a real cluster): one
# of 3 tasks is killed, the other two finish the job (docs/elasticity.md).
"$YOKE" data prepare --out "$YK_TMP/data" /usr/share/common-licenses/* > /dev/null
cat > "$YK_TMP/el.yaml" <<YAML
model: {name: tiny}
data: {train: "$YK_TMP/data/train_*.bin"}
train: {micro_batch: 2, seq_len: 32, steps: 150, threads: 1, grad_accum: 2}
coord: {heartbeat_ms: 200, heartbeat_timeout_ms: 2000}
elastic: {enabled: true}
YAML
port=$(free_port)
"$YOKE" coord "$YK_TMP/el.yaml" --world 3 --port $port > "$YK_TMP/elcoord.log" 2>&1 &
coordpid=$!
out=$YK_TMP/elsrun.log
YOKE_COORD=127.0.0.1:$port YK_TEST_DELAY_RANK=-1:30 timeout 90 srun --no-kill -n 3 --time=2 "$YOKE" train "$YK_TMP/el.yaml" \
  > "$out" 2>&1 &
srunpid=$!
for i in $(seq 100); do grep -q "step 20/" "$out" 2>/dev/null && break; sleep 0.2; done
victim=$(pgrep -f "yoke train $YK_TMP/el.yaml" | tail -1)
kill -9 "$victim"
wait $srunpid
wait $coordpid; crc=$?
grep -q "epoch 2: 2 ranks" "$out" && grep -q "done: 150 steps" "$out" && [ $crc = 0 ] \
  && pass "srun --no-kill: a task killed, the other two re-formed and finished; yoke coord exits 0" \
  || fail "elastic srun: coord exit $crc: $(grep -h 'ERROR\|epoch' "$out" "$YK_TMP/elcoord.log" | head -4)"
finish
