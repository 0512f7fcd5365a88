#!/usr/bin/env bash
# yoke train with checkpoints, real processes:
#  - bitwise resume at the same world size: N steps straight vs K steps
#    (train.stop_after: checkpoint + exit 75 as if preempted) + --resume latest
#    + N-K steps print identical per-step losses and gradient norms and end
#    with an identical params checksum; 1 rank, fp16 and bf16 on 1 rank, and
#    2 ranks under mpirun (MPI transport);
#  - fp16 and bf16 gradient norms are within 2e-3 (fp16) and 1e-2 (bf16) of
#    fp32's per step (relative; losses within 1e-3 and 1e-2): a resume that
#    is bitwise equal to a wrong run, e.g. fp16 gradients never unscaled,
#    still fails here;
#  - resharded resume: a checkpoint written by 2 ranks resumed by 1 (with
#    grad_accum 2, the same global batch) and one written by 1 rank resumed by
#    2 continue the uninterrupted run's losses within 1e-4 per step (absolute)
#    and its gradient norms within 1e-5 (relative; the only difference is the
#    fp32 order of the gradient reduction; a wrong gradient scale for one
#    world size leaves the losses alone and moves the norms);
#  - the GPT-2 export of the checkpoint equals --save-weights byte for byte and
#    `yoke eval` gives the same loss on it;
#  - resume into another model shape is refused naming the tensor.
set -u
. "$(dirname "$0")/../lib.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
export YOKE_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
MPIRUN="mpirun -np 2 --oversubscribe --bind-to none -x YOKE_SECRET -x OMP_NUM_THREADS"

"$YOKE" data prepare --out "$tmp/data" /usr/share/common-licenses/* > /dev/null || { fail "data prepare"; finish; exit 1; }
cat > "$tmp/job.yaml" <<YAML
model: {name: tiny}
data: {train: "$tmp/data/train_*.bin", val: "$tmp/data/val_*.bin"}
train: {micro_batch: 4, seq_len: 32, steps: 10, threads: 1, val_batches: 4}
optim: {lr: 1e-3, warmup_steps: 2, schedule: cosine, weight_decay: 0.1}
comm: {timeout_ms: 20000, transport: mpi}
coord: {port: $((20000 + RANDOM % 20000))}  # a port of our own: other jobs may hold the default
YAML
sums() { cat "$@" | grep -o '"params_checksum": "[0-9a-f]*"' | sort -u; }
run() { # run NAME EXPECTED_EXIT yoke-args...
  local name=$1 want=$2; shift 2
  "$@" > "$tmp/$name.json" 2> "$tmp/$name.log"; local rc=$?
  [ "$rc" = "$want" ] || fail "$name: exit $rc, wanted $want: $(grep -h 'ERROR' "$tmp/$name.log" | head -3)"
  return 0
}
same_run() { # same_run WHAT STRAIGHT PART1 PART2
  local what=$1 a=$2 b=$3 c=$4
  # (fp16 steps skipped on a gradient overflow print no loss line)
  local nl; nl=$(yk_steps "$tmp/$a.json" | wc -l)
  if [ "$nl" -ge 6 ] && diff <(yk_steps "$tmp/$a.json") <(yk_steps "$tmp/$b.json" "$tmp/$c.json") > "$tmp/diff"; then
    pass "$what: $nl per-step losses and gradient norms identical"
  else fail "$what: losses differ: $(head -4 "$tmp/diff")"; fi
  local s1 s2; s1=$(sums "$tmp/$a.json"); s2=$(sums "$tmp/$c.json")
  [ -n "$s1" ] && [ "$s1" = "$s2" ] && [ "$(echo "$s1" | wc -l)" = 1 ] && pass "$what: params checksum identical ($s1)" \
    || fail "$what: params checksums '$s1' vs '$s2'"
}
close_losses() { # close_losses WHAT STRAIGHT RESUMED FIRST_STEP
  local what=$1 a=$2 b=$3 first=$4 f
  f=$(yk_steps "$tmp/$b.json" | head -1 | cut -d' ' -f1)
  [ "$f" = "$first" ] || fail "$what: the resumed run's first step is '$f', wanted $first"
  compare_steps "$what: steps $first..10 vs the uninterrupted run" "$tmp/$b.json" "$tmp/$a.json" "$first" 10 1e-4 1e-5
}

# ---- 1 rank, bitwise
run s1 0 "$YOKE" train "$tmp/job.yaml" --json --set ckpt.dir="$tmp/s1" --set ckpt.every=3 --save-weights "$tmp/s1.bin"
run k1 75 "$YOKE" train "$tmp/job.yaml" --json --set ckpt.dir="$tmp/k1" --set train.stop_after=4
grep -q "train.stop_after=4: checkpoint" "$tmp/k1.log" && [ -d "$tmp/k1/step-00000004" ] && pass "stop_after 4: step-4 committed, exit 75" \
  || fail "stop_after: $(ls "$tmp/k1")"
run r1 0 "$YOKE" train "$tmp/job.yaml" --json --set ckpt.dir="$tmp/k1" --resume latest
grep -q "resumed from $tmp/k1/step-00000004 (step 4" "$tmp/r1.log" && pass "1 rank: resumed at step 4" || fail "no resume line: $(grep ckpt "$tmp/r1.log" | head -2)"
same_run "1 rank 10 vs 4+resume+6" s1 k1 r1
expect_ok "ckpt verify of the periodic checkpoints" "$YOKE" ckpt verify "$tmp/s1"
n=$("$YOKE" ckpt ls "$tmp/s1" | grep -c committed\\\|latest)
[ "$n" = 3 ] && pass "ckpt.keep=3: 3 checkpoints kept (3, 6, 9, 10 saved)" || fail "ckpt ls shows $n checkpoints: $("$YOKE" ckpt ls "$tmp/s1")"
n=$(grep -c "ckpt: committed" "$tmp/s1.log")
[ "$n" = 4 ] && [ "$(grep -c "ckpt: committed $tmp/s1/step-00000010 " "$tmp/s1.log")" = 1 ] \
  && pass "one 'committed' line per save (4 saves, the final one once)" || fail "committed lines: $(grep "ckpt: committed" "$tmp/s1.log")"

# ---- mixed precision: the master weights and the fp16 loss scaler are restored
for p in fp16 bf16; do
  run s$p 0 "$YOKE" train "$tmp/job.yaml" --json --set train.precision=$p
  run k$p 75 "$YOKE" train "$tmp/job.yaml" --json --set train.precision=$p --set ckpt.dir="$tmp/k$p" --set train.stop_after=3
  run r$p 0 "$YOKE" train "$tmp/job.yaml" --json --set train.precision=$p --set ckpt.dir="$tmp/k$p" --resume latest
  same_run "$p 1 rank 10 vs 3+resume+7" s$p k$p r$p
done
# (at the default loss_scale.init 65536 the first fp16 step overflows and is
# skipped, which the resumes above need; the comparison with fp32 starts at
# 4096 so both runs apply every step)
run sfp16b 0 "$YOKE" train "$tmp/job.yaml" --json --set train.precision=fp16 --set loss_scale.init=4096
compare_steps "fp16 vs fp32 (1 rank, loss_scale.init=4096)" "$tmp/sfp16b.json" "$tmp/s1.json" 1 10 1e-3 2e-3
compare_steps "bf16 vs fp32 (1 rank)" "$tmp/sbf16.json" "$tmp/s1.json" 1 10 1e-2 1e-2
"$YOKE" ckpt inspect "$tmp/kfp16" > "$tmp/kfp16.txt"
# the fp32 arena is the master; the 16-bit weights are its rounding, not a second arena
grep -q "params *f32" "$tmp/kfp16.txt" && ! grep -q "params16" "$tmp/kfp16.txt" &&
  pass "fp16 checkpoint holds the fp32 master weights (params) and no second copy" ||
  fail "fp16 checkpoint arenas: $(grep -E 'params' "$tmp/kfp16.txt" | head -3 | tr '\n' ' ')"

# ---- GPT-2 export of the layer-major arena
expect_ok "export --export-gpt2" "$YOKE" ckpt convert "$tmp/s1" --export-gpt2 "$tmp/x.bin"
cmp -s "$tmp/x.bin" "$tmp/s1.bin" && pass "exported GPT-2 file == --save-weights file" || fail "export differs from --save-weights"
l1=$("$YOKE" eval --weights "$tmp/s1.bin" --data "$tmp/data/val_*.bin" --seq-len 32 --threads 1 --json | tail -1)
l2=$("$YOKE" eval --weights "$tmp/x.bin" --data "$tmp/data/val_*.bin" --seq-len 32 --threads 1 --json | tail -1)
[ -n "$l1" ] && [ "$l1" = "$l2" ] && pass "yoke eval of the export: $l2" || fail "eval '$l1' vs '$l2'"
expect_ok "export --export-safetensors" "$YOKE" ckpt convert "$tmp/s1" --export-safetensors "$tmp/x.st"
head -c 4000 "$tmp/x.st" | grep -q '"h1.fcprojw":{"dtype":"F32","shape":\[64,256\]' && pass "safetensors names the layer tensors" \
  || fail "safetensors header"

# ---- wrong model shape
run bad 1 "$YOKE" train "$tmp/job.yaml" --set ckpt.dir="$tmp/k1" --resume "$tmp/k1/step-00000004" --set model.name=small
grep -q "arena 'params'.*resume with the model settings" "$tmp/bad.log" && pass "another model shape is refused" \
  || fail "model mismatch message: $(grep ERROR "$tmp/bad.log")"

# ---- 2 ranks, bitwise
run s2 0 $MPIRUN "$YOKE" train "$tmp/job.yaml" --json --set ckpt.dir="$tmp/s2" --set ckpt.every=3
run k2 75 $MPIRUN "$YOKE" train "$tmp/job.yaml" --json --set ckpt.dir="$tmp/k2" --set train.stop_after=5
cp -r "$tmp/k2" "$tmp/k2copy"
run r2 0 $MPIRUN "$YOKE" train "$tmp/job.yaml" --json --set ckpt.dir="$tmp/k2" --resume latest
same_run "2 ranks 10 vs 5+resume+5" s2 k2 r2
[ "$(grep -c '"done": true' "$tmp/r2.json")" = 2 ] && pass "both ranks finished the resumed run" || fail "done lines"
"$YOKE" ckpt ls "$tmp/k2" | grep -q "^10 *2 " && pass "final checkpoint written by 2 ranks" || fail "ls: $("$YOKE" ckpt ls "$tmp/k2")"

# ---- resharding 2 -> 1 (grad_accum 2 keeps the global batch) and 1 -> 2
run r21 0 "$YOKE" train "$tmp/job.yaml" --json --set ckpt.dir="$tmp/k2copy" --resume latest --set train.grad_accum=2
grep -q "step 5, written by 2 ranks, now 1" "$tmp/r21.log" && pass "2 -> 1: resumed a 2-rank checkpoint" || fail "2->1 resume line"
! grep -q "global batch changes" "$tmp/r21.log" && pass "2 -> 1 keeping the global batch: no WARN" || fail "2->1 WARN: $(grep WARN "$tmp/r21.log")"
close_losses "2 -> 1" s2 r21 6
run s1a 0 "$YOKE" train "$tmp/job.yaml" --json --set train.grad_accum=2
run k1a 75 "$YOKE" train "$tmp/job.yaml" --json --set ckpt.dir="$tmp/k1a" --set train.grad_accum=2 --set train.stop_after=3
cp -r "$tmp/k1a" "$tmp/k1b"
run r12 0 $MPIRUN "$YOKE" train "$tmp/job.yaml" --json --set ckpt.dir="$tmp/k1a" --resume latest
grep -q "step 3, written by 1 rank, now 2" "$tmp/r12.log" && pass "1 -> 2: resumed a 1-rank checkpoint" || fail "1->2 resume line"
! grep -q "global batch changes" "$tmp/r12.log" && pass "1 -> 2 keeping the global batch: no WARN" || fail "1->2 WARN: $(grep WARN "$tmp/r12.log")"
# 1 -> 2 ranks without adjusting grad_accum doubles the global batch: one WARN (from rank 0) saying how to keep it
run r12b 0 $MPIRUN "$YOKE" train "$tmp/job.yaml" --json --set ckpt.dir="$tmp/k1b" --resume latest --set train.grad_accum=2
[ "$(grep -c 'WARN.*global batch changes' "$tmp/r12b.log")" = 1 ] && grep -q "x 2 ranks).*set train.grad_accum=1 to keep it" "$tmp/r12b.log" \
  && pass "1 -> 2 at another global batch: one WARN with the grad_accum that keeps it" \
  || fail "1->2 batch WARN: $(grep -E 'WARN|ERROR' "$tmp/r12b.log" | head -3)"
close_losses "1 -> 2" s1a r12 4
finish
