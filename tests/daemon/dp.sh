#!/usr/bin/env bash
# Data-parallel yoke train with real processes:
#  - equivalence: the same global batch split as 1 rank x grad_accum 4,
#    2 ranks x 2 and 4 ranks x 1 gives the same per-step loss within 1e-4
#    (absolute) and the same per-step grad_norm within 1e-5 (relative; the
#    only difference is fp32 reduction order, seen: identical to the 6
#    printed digits). The norm is what catches a wrong gradient scale
#    (a missing 1/grad_accum, a cross-rank sum instead of the mean):
#    clipping and AdamW cancel a constant scale, so the losses do not move.
#    Once more with clipping off (optim.grad_clip=0), which must change the
#    run (clipping is applied);
#  - determinism: the same 2-rank run twice prints identical losses and norms;
#  - every rank ends with bitwise-identical weights (params checksum);
#  - the launchers: mpirun (MPI transport) and yoke launch (libfabric), and
#    both transports give bitwise-identical weights.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/lib-train.sh"
cat > "$tmp/job.yaml" <<YAML
model: {name: tiny}
data: {train: "$tmp/data/train_*.bin", val: "$tmp/data/val_*.bin"}
train: {micro_batch: 4, seq_len: 32, steps: 12, threads: 1, val_batches: 4}
optim: {lr: 1e-3, warmup_steps: 2, schedule: cosine, weight_decay: 0.1}
comm: {timeout_ms: 20000}
YAML

"$YOKE" train "$tmp/job.yaml" --json --set train.grad_accum=4 > "$tmp/r1.json" 2> "$tmp/r1.log" \
  && pass "1 rank x accum 4" || fail "1 rank run: $(tail -2 "$tmp/r1.log")"
# run N TRANSPORT ARGS...: mpi = mpirun with OpenMPI's transport; libfabric =
# the local launcher (coordinator bootstrap, libfabric shm provider).
run() {
  local n=$1 t=$2; shift 2
  if [ "$t" = mpi ]; then $MPIRUN -np "$n" "$YOKE" train "$tmp/job.yaml" --set comm.transport=mpi --set coord.port=$YK_PORT "$@"
  else "$YOKE" launch -n "$n" -- train "$tmp/job.yaml" --set comm.transport=libfabric "$@" | sed 's/^\[r[0-9]*\] //'; fi
}
for t in mpi libfabric; do
  run 2 $t --json --set train.grad_accum=2 > "$tmp/r2.$t.json" 2> "$tmp/r2.$t.log" \
    && pass "2 ranks x accum 2 ($t)" || fail "2 ranks ($t): $(grep ERROR "$tmp/r2.$t.log" | head -2)"
  run 4 $t --json --set train.grad_accum=1 > "$tmp/r4.$t.json" 2> "$tmp/r4.$t.log" \
    && pass "4 ranks x accum 1 ($t)" || fail "4 ranks ($t): $(grep ERROR "$tmp/r4.$t.log" | head -2)"
  for n in 2 4; do
    compare_steps "1x4 vs ${n}x$((4 / n)) ($t)" "$tmp/r$n.$t.json" "$tmp/r1.json" 1 12 1e-4 1e-5
    sums=$(grep -o '"params_checksum": "[0-9a-f]*"' "$tmp/r$n.$t.json" | sort -u | wc -l)
    ranks=$(grep -c '"done": true' "$tmp/r$n.$t.json")
    [ "$ranks" = "$n" ] && [ "$sums" = 1 ] && pass "$n ranks ($t) hold identical weights" \
      || fail "$n ranks ($t): $ranks done lines, $sums distinct checksums"
  done
  grep -q "global batch 4 x 2 x 2 ranks = 16 sequences" "$tmp/r2.$t.log" && pass "global batch logged ($t)" || fail "global batch line ($t)"
  run 2 $t --json --set train.grad_accum=2 > "$tmp/r2b.json" 2>/dev/null
  [ "$(yk_steps "$tmp/r2.$t.json" | wc -l)" = 12 ] && diff <(yk_steps "$tmp/r2.$t.json") <(yk_steps "$tmp/r2b.json") > /dev/null \
    && pass "2-rank run is deterministic ($t): losses and norms" || fail "2-rank runs differ ($t)"
done
# Clipping off: the update sees the unclipped gradients (with the default
# grad_clip 1.0 and norms of 2-4 every step is rescaled to norm 1 first).
# A constant scale still hides from the losses behind AdamW's m/sqrt(v);
# the norms show it.
"$YOKE" train "$tmp/job.yaml" --json --set train.grad_accum=4 --set optim.grad_clip=0 > "$tmp/c1.json" 2> "$tmp/c1.log" \
  || fail "1 rank, clipping off: $(tail -2 "$tmp/c1.log")"
for n in 2 4; do
  run $n libfabric --json --set train.grad_accum=$((4 / n)) --set optim.grad_clip=0 > "$tmp/c$n.json" 2> "$tmp/c$n.log" \
    || fail "$n ranks, clipping off: $(grep ERROR "$tmp/c$n.log" | head -2)"
  compare_steps "clipping off: 1x4 vs ${n}x$((4 / n))" "$tmp/c$n.json" "$tmp/c1.json" 1 12 1e-4 1e-5
done
# ... and clipping is applied at all: the default grad_clip 1.0 run departs
# from the clip-off one after its first update (seen: up to 2.3e-3 in the
# loss; AdamW undoes a constant scale, not one that changes every step).
# Ignoring the clip coefficient makes the two runs bitwise equal.
d=$(paste <(yk_steps "$tmp/r1.json") <(yk_steps "$tmp/c1.json") | awk '
  NF == 8 { d = $2 - $6; if (d < 0) d = -d; if (d > m) m = d; n++ } END { if (n == 12) print m + 0 }')
num_test "$d" ">" 3e-4 && pass "clipping acts: grad_clip 1.0 vs 0 differ by up to $d in the loss (> 3e-4)" \
  || fail "clipping has no effect: grad_clip 1.0 vs 0 differ by '$d' at most in the loss (want > 3e-4)"
# ZeRO-1 (optim.shard, the default) against every rank updating everything:
# AdamW is element-wise, only the gradient norm is summed in another order
grep -q "optimizer: sharded (ZeRO-1" "$tmp/r2.libfabric.log" && pass "2 ranks shard the optimizer by default" \
  || fail "no ZeRO-1 line in the 2-rank log"
run 2 libfabric --json --set train.grad_accum=2 --set optim.shard=false > "$tmp/r2ns.json" 2> "$tmp/r2ns.log"
compare_steps "ZeRO-1 vs unsharded optimizer (2 ranks)" "$tmp/r2ns.json" "$tmp/r2.libfabric.json" 1 12 1e-5 1e-5
s1=$(grep -o '"params_checksum": "[0-9a-f]*"' "$tmp/r2.mpi.json" | head -1)
s2=$(grep -o '"params_checksum": "[0-9a-f]*"' "$tmp/r2.libfabric.json" | head -1)
[ -n "$s1" ] && [ "$s1" = "$s2" ] && pass "MPI and libfabric runs end with identical weights" || fail "transports differ: $s1 vs $s2"

# kill -9 of one rank mid-training: the other names it and exits with the
# peer-dead code (3) within coord.heartbeat_timeout_ms (2 s here) + 2 s.
"$YOKE" launch -n 2 -- train "$tmp/job.yaml" --set train.steps=100000 --set coord.heartbeat_timeout_ms=2000 \
  --set data.val= > "$tmp/kill.log" 2>&1 &
lpid=$!
victim=""
for i in $(seq 1 100); do
  for p in $(pgrep -f "train $tmp/job.yaml"); do
    if tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx YOKE_RANK=1; then victim=$p; fi
  done
  [ -n "$victim" ] && grep -q "step 1/" "$tmp/kill.log" && break
  sleep 0.1
done
if [ -z "$victim" ]; then fail "rank 1 of the kill test never started"; kill $lpid; else
  kill -9 "$victim"; t0=$(date +%s%N)
  wait $lpid; rc=$?
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  [ $ms -le 4000 ] && pass "job ended ${ms} ms after kill -9 (limit 4000)" || fail "job took ${ms} ms to end"
  grep -q "\[r0\].*rank 1 .*\(died\|dead\|failed\|lost\)" "$tmp/kill.log" && pass "rank 0 names dead rank 1" \
    || fail "rank 0 did not name rank 1: $(grep '\[r0\]' "$tmp/kill.log" | tail -3)"
  [ $rc -ne 0 ] && pass "launcher exits non-zero ($rc)" || fail "launcher exit 0 after a kill"
  sleep 0.5
  left=$(pgrep -f "train $tmp/job.yaml" | wc -l)
  [ "$left" = 0 ] && pass "no rank left behind" || fail "$left processes left"
fi
# SIGINT to one rank only: every rank stops at the same step boundary and
# the job exits 130 (no checkpoint dir: nothing to save).
"$YOKE" launch -n 2 -- train "$tmp/job.yaml" --set train.steps=100000 --set data.val= > "$tmp/int.log" 2>&1 &
lpid=$!
victim=""
for i in $(seq 1 100); do
  for p in $(pgrep -f "train $tmp/job.yaml"); do
    tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx YOKE_RANK=1 && victim=$p
  done
  [ -n "$victim" ] && grep -q "step 1/" "$tmp/int.log" && break
  sleep 0.1
done
if [ -n "$victim" ]; then
  kill -INT "$victim"; wait $lpid; rc=$?
  [ $rc = 130 ] && pass "SIGINT to rank 1: job exits 130" || fail "SIGINT: launcher exit $rc"
  s0=$(grep -o '\[r0\].*stopping at step [0-9]*' "$tmp/int.log" | grep -o 'step [0-9]*$')
  s1=$(grep -o '\[r1\].*stopping at step [0-9]*' "$tmp/int.log" | grep -o 'step [0-9]*$')
  [ -n "$s0" ] && [ "$s0" = "$s1" ] && pass "both ranks stopped at the same boundary ($s0)" || fail "stop steps '$s0' vs '$s1'"
else
  fail "rank 1 of the SIGINT test never started"; kill $lpid
fi
finish
