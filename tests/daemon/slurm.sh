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
finish
