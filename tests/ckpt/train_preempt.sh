#!/usr/bin/env bash
# Preemption of `yoke train`: SIGUSR1 (SLURM's --signal=USR1@T) or SIGTERM
# -> checkpoint at the next step boundary -> exit 75 (YK_EXIT_REQUEUE); then
# --resume latest trains to the end and the whole run (losses and gradient
# norms of both parts, final params checksum) is bitwise identical to an
# uninterrupted one.
#  - 1 rank: SIGUSR1, SIGTERM (signal handler in the step loop);
#  - 2 ranks under mpirun: SIGUSR1 to rank 1 ONLY; the ranks agree (MAX
#    all-reduce of a stop flag at every boundary) and both checkpoint the same
#    step; the periodic async saves (ckpt.every) run meanwhile.
set -u
. "$(dirname "$0")/../lib.sh"
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
export YOKE_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
MPIRUN="mpirun -np 2 --oversubscribe --bind-to none -x YOKE_SECRET -x OMP_NUM_THREADS"
STEPS=300
"$YOKE" data prepare --out "$tmp/data" /usr/share/common-licenses/* > /dev/null || { fail "data prepare"; finish; exit 1; }
cat > "$tmp/job.yaml" <<YAML
model: {name: tiny}
data: {train: "$tmp/data/train_*.bin"}
train: {micro_batch: 2, seq_len: 32, steps: $STEPS, threads: 1}
optim: {lr: 1e-3, warmup_steps: 5, schedule: cosine}
comm: {timeout_ms: 20000, transport: mpi}
coord: {port: $((20000 + RANDOM % 20000))}  # a port of our own: other jobs may hold the default
ckpt: {every: 7, keep: 2}
YAML
sums() { cat "$@" | grep -o '"params_checksum": "[0-9a-f]*"' | sort -u; }
wait_log() { # wait_log FILE PATTERN SECONDS
  local i
  for i in $(seq $(( $3 * 20 ))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  return 1
}
wait_pid() { # wait_pid PID SECONDS -> exit code (124 on timeout, then killed)
  local i
  for i in $(seq $(( $2 * 20 ))); do kill -0 "$1" 2>/dev/null || { wait "$1"; return $?; }; sleep 0.05; done
  kill -9 "$1" 2>/dev/null; wait "$1" 2>/dev/null; return 124
}
check_resume() { # check_resume WHAT STRAIGHT PART1 PART2
  if [ "$(yk_steps "$tmp/$2.json" | wc -l)" = $STEPS ] && diff <(yk_steps "$tmp/$2.json") <(yk_steps "$tmp/$3.json" "$tmp/$4.json") > /dev/null; then
    pass "$1: $STEPS losses and gradient norms of preempted + resumed run identical to the straight run"
  else fail "$1: losses or norms differ ($(yk_steps "$tmp/$3.json" "$tmp/$4.json" | wc -l) lines)"; fi
  local a b; a=$(sums "$tmp/$2.json"); b=$(sums "$tmp/$4.json")
  [ -n "$a" ] && [ "$a" = "$b" ] && pass "$1: final params checksum identical" || fail "$1: checksum '$a' vs '$b'"
}

"$YOKE" train "$tmp/job.yaml" --json > "$tmp/s1.json" 2> "$tmp/s1.log" || fail "straight run: $(tail -2 "$tmp/s1.log")"

for sig in USR1 TERM; do
  "$YOKE" train "$tmp/job.yaml" --json --set ckpt.dir="$tmp/c$sig" > "$tmp/p$sig.json" 2> "$tmp/p$sig.log" &
  pid=$!; pids+=($pid)
  if wait_log "$tmp/p$sig.log" "step 20/$STEPS" 30; then kill -$sig $pid; else fail "$sig: run did not reach step 20"; fi
  wait_pid $pid 60; rc=$?
  k=$(sed -n 's/.*preempted: checkpoint of step \([0-9]*\) is committed.*/\1/p' "$tmp/p$sig.log")
  [ $rc = 75 ] && [ -n "$k" ] && [ "$k" -lt $STEPS ] && [ -d "$tmp/c$sig/step-$(printf %08d "$k")" ] \
    && pass "1 rank SIG$sig: checkpoint of step $k committed, exit 75" || fail "1 rank SIG$sig: exit $rc, step '$k': $(grep -E 'ERROR|WARN' "$tmp/p$sig.log" | head -3)"
  "$YOKE" train "$tmp/job.yaml" --json --set ckpt.dir="$tmp/c$sig" --resume latest > "$tmp/r$sig.json" 2> "$tmp/r$sig.log" \
    && grep -q "resumed from .*step $k," "$tmp/r$sig.log" && pass "1 rank SIG$sig: resumed at step $k and finished" \
    || fail "1 rank SIG$sig resume: $(grep -E 'ERROR|resumed' "$tmp/r$sig.log" | head -2)"
  check_resume "1 rank SIG$sig" s1 p$sig r$sig
done

# 2 ranks: signal rank 1 only
$MPIRUN "$YOKE" train "$tmp/job.yaml" --json > "$tmp/s2.json" 2> "$tmp/s2.log" || fail "2-rank straight run: $(grep ERROR "$tmp/s2.log" | head -2)"
# (log.ranks=all: the wait below is for rank 1's own step line)
$MPIRUN "$YOKE" train "$tmp/job.yaml" --json --set ckpt.dir="$tmp/c2" --set log.ranks=all > "$tmp/p2.json" 2> "$tmp/p2.log" &
mpid=$!; pids+=($mpid)
r1=
if wait_log "$tmp/p2.log" "r1 INFO  step 20/$STEPS" 40; then
  for p in $(pgrep -f "yoke train $tmp/job.yaml"); do
    tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && r1=$p
  done
fi
[ -n "$r1" ] && kill -USR1 "$r1" || fail "2 ranks: could not find rank 1"
wait_pid $mpid 60; rc=$?
k0=$(sed -n 's/.*r0 WARN  preempted: checkpoint of step \([0-9]*\) is committed.*/\1/p' "$tmp/p2.log")
k1=$(sed -n 's/.*r1 WARN  preempted: checkpoint of step \([0-9]*\) is committed.*/\1/p' "$tmp/p2.log")
[ $rc = 75 ] && [ -n "$k0" ] && [ "$k0" = "$k1" ] && "$YOKE" ckpt ls "$tmp/c2" | grep -q "^$k0 *2 .*latest" \
  && pass "2 ranks, SIGUSR1 to rank 1 only: both checkpointed step $k0, exit 75" \
  || fail "2 ranks: exit $rc, steps '$k0' '$k1': $(grep -E 'ERROR' "$tmp/p2.log" | head -3)"
$MPIRUN "$YOKE" train "$tmp/job.yaml" --json --set ckpt.dir="$tmp/c2" --resume latest > "$tmp/r2.json" 2> "$tmp/r2.log" \
  && pass "2 ranks: resumed and finished" || fail "2 ranks resume: $(grep ERROR "$tmp/r2.log" | head -2)"
check_resume "2 ranks SIGUSR1" s2 p2 r2
finish
