#!/usr/bin/env bash
# On a real one-node SLURM cluster (tests/daemon/slurm-cluster.sh: munged,
# slurmctld, slurmd on localhost): cluster-configs/slurm/preemptible.sbatch
# runs `yoke train --resume latest`; `scancel --signal=USR1 JOBID` (what
# --signal=USR1@T does before the time limit) makes it checkpoint and exit
# 75, the script requeues the job with `scontrol requeue`, SLURM starts it
# again, and the second run resumes from the checkpoint and completes; its
# final weights equal an uninterrupted run's (params checksum). Every wait
# is bounded. Skips (exit 77, one line why; ctest shows it skipped) when the
# cluster cannot start: not root, SLURM or munge missing, or the daemons do
# not come up (test_daemon_slurm, which needs the same cluster, fails then).
set -u
. "$(dirname "$0")/../lib.sh"
tmp=$(mktemp -d)
export YK_SLURM_DIR=/tmp/yk-slurm-ckpt-$$
CLUSTER="$YK_SOURCE_DIR/tests/daemon/slurm-cluster.sh"
cleanup() { bash "$CLUSTER" down "$YK_SLURM_DIR" > /dev/null 2>&1; rm -rf "$tmp"; }
trap cleanup EXIT
need_slurm "the SLURM requeue test"
if ! bash "$CLUSTER" up "$YK_SLURM_DIR" > "$tmp/up.log" 2>&1; then
  skip "cannot start a SLURM cluster on this machine: $(tail -2 "$tmp/up.log" | tr '\n' ' ')"
fi
export SLURM_CONF=$YK_SLURM_DIR/slurm.conf
STEPS=1500
"$YOKE" data prepare --out "$tmp/data" /usr/share/common-licenses/* > /dev/null || { fail "data prepare"; finish; exit 1; }
cat > "$tmp/job.yaml" <<YAML
model: {name: tiny}
data: {train: "$tmp/data/train_*.bin"}
train: {micro_batch: 2, seq_len: 32, steps: $STEPS, threads: 1, log_every: 10}
optim: {lr: 1e-3, warmup_steps: 5, schedule: cosine}
ckpt: {dir: "$tmp/ck", every: 200, keep: 2}
YAML
"$YOKE" train "$tmp/job.yaml" --json --set ckpt.dir="$tmp/ck-straight" > "$tmp/straight.json" 2> /dev/null || fail "straight run"

out="$tmp/job.out"
jid=$(YOKE="$YOKE" sbatch --parsable --chdir="$tmp" --output="$out" --time=5 \
  "$YK_SOURCE_DIR/cluster-configs/slurm/preemptible.sbatch" "$tmp/job.yaml" --json 2> "$tmp/sbatch.err")
[ -n "$jid" ] && pass "sbatch: job $jid" || { fail "sbatch: $(cat "$tmp/sbatch.err")"; finish; exit 1; }
state() { scontrol show job "$jid" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2; }
waitfor() { # waitfor SECONDS CMD...: poll every 0.2 s
  local i; for i in $(seq $(( $1 * 5 ))); do "${@:2}" && return 0; sleep 0.2; done; return 1
}
# release JOBID: SLURM holds a requeued job back (BeginTime about 2 minutes
# ahead); a real cluster would wait, the test makes it eligible now. The job
# may still be finishing its requeue when we ask, so ask again while it is
# pending (bounded by the caller's waitfor).
release() {
  if scontrol show job "$1" 2>/dev/null | grep -q 'JobState=PENDING'; then
    scontrol update JobId="$1" StartTime=now 2>/dev/null
  fi
  return 1
}
if waitfor 60 grep -qs "INFO  step 100/$STEPS" "$out"; then
  scancel --signal=USR1 "$jid" && pass "scancel --signal=USR1 $jid at step >= 100"
else fail "job did not reach step 100 (state $(state)): $(tail -3 "$out" 2>/dev/null)"; fi
waitfor 60 grep -q "requeueing job $jid" "$out" && pass "run 1 checkpointed, exited 75 and requeued the job" \
  || fail "no requeue (state $(state)): $(grep -E 'ERROR|WARN|yoke:' "$out" | tail -3)"
k=$(sed -n 's/.*preempted: checkpoint of step \([0-9]*\) is committed.*/\1/p' "$out" | head -1)
# SLURM holds a requeued job back (its BeginTime is set about 2 minutes
# ahead); a real cluster would wait, the test makes it eligible now.
waitfor 30 sh -c "scontrol show job $jid 2>/dev/null | grep -q 'JobState=PENDING'" && pass "job is PENDING again after the requeue" \
  || fail "job state after requeue: $(state)"
scontrol show job "$jid" | grep -o 'BeginTime=[^ ]*' | sed 's/^/requeued job: /'
scontrol update JobId="$jid" StartTime=now || fail "scontrol update StartTime=now"
waitfor 120 grep -q '"done": true' "$out" && pass "requeued run finished (state $(state))" \
  || fail "requeued run did not finish (state $(state)): $(tail -3 "$out")"
grep -q "run 2 on" "$out" && grep -q "resumed from $tmp/ck/step-$(printf %08d "${k:-0}") (step $k," "$out" \
  && pass "run 2 resumed from the checkpoint of step $k" || fail "run 2 resume: $(grep -E 'resumed|run [0-9]' "$out")"
waitfor 30 sh -c "scontrol show job $jid 2>/dev/null | grep -q 'JobState=COMPLETED'" && pass "job COMPLETED" \
  || fail "job state $(state)"
a=$(grep -o '"params_checksum": "[0-9a-f]*"' "$tmp/straight.json"); b=$(grep -o '"params_checksum": "[0-9a-f]*"' "$out" | tail -1)
[ -n "$a" ] && [ "$a" = "$b" ] && pass "requeued job ends with the uninterrupted run's weights ($a)" || fail "checksums '$a' vs '$b'"

# The same with 2 tasks (srun: ranks bootstrap through the coordinator, the
# signal reaches both, the control plane and the stop agreement make them
# checkpoint the same step). log.ranks=all: the checks read rank 1's own lines.
out2="$tmp/job2.out"
rm -rf "$tmp/ck"
jid=$(YOKE="$YOKE" sbatch --parsable --ntasks-per-node=2 --chdir="$tmp" --output="$out2" --time=5 \
  "$YK_SOURCE_DIR/cluster-configs/slurm/preemptible.sbatch" "$tmp/job.yaml" --json --set log.ranks=all 2> "$tmp/sbatch.err")
[ -n "$jid" ] && pass "sbatch 2 tasks: job $jid" || { fail "sbatch 2 tasks: $(cat "$tmp/sbatch.err")"; finish; exit 1; }
if waitfor 60 grep -qs "r1 INFO  step 100/$STEPS" "$out2"; then scancel --signal=USR1 "$jid"
else fail "2 tasks: job did not reach step 100 (state $(state)): $(tail -3 "$out2" 2>/dev/null)"; fi
waitfor 60 grep -q "requeueing job $jid" "$out2" || fail "2 tasks: no requeue: $(grep -E 'ERROR|yoke:' "$out2" | tail -3)"
k0=$(sed -n 's/.*r0 WARN  preempted: checkpoint of step \([0-9]*\) is committed.*/\1/p' "$out2" | head -1)
k1=$(sed -n 's/.*r1 WARN  preempted: checkpoint of step \([0-9]*\) is committed.*/\1/p' "$out2" | head -1)
[ -n "$k0" ] && [ "$k0" = "$k1" ] && pass "2 tasks: both ranks checkpointed step $k0, exit 75, job requeued" \
  || fail "2 tasks: checkpoint steps '$k0' '$k1'"
waitfor 30 sh -c "scontrol show job $jid 2>/dev/null | grep -q 'JobState=PENDING'"
scontrol update JobId="$jid" StartTime=now || fail "scontrol update StartTime=now"
done2() { release "$jid"; [ "$(grep -c '"done": true' "$out2")" -ge 2 ]; }
waitfor 120 done2 || fail "2 tasks: requeued run did not finish (state $(state)): $(tail -3 "$out2")"
[ "$(grep -c "resumed from $tmp/ck/step-$(printf %08d "${k0:-0}") (step $k0, written by 2 ranks, now 2)" "$out2")" = 2 ] \
  && pass "2 tasks: both ranks resumed from step $k0" || fail "2 tasks resume: $(grep -E 'resumed' "$out2")"
[ "$(grep -o '"params_checksum": "[0-9a-f]*"' "$out2" | sort -u | wc -l)" = 1 ] && pass "2 tasks: ranks end with identical weights" \
  || fail "2 tasks: checksums differ"
finish
