#!/usr/bin/env bash
# Resume at another tensor-parallel degree (engine/ckpt.c restore_resharded):
# each arena (params, m, v, params16) is put together whole from the saved
# pieces and cut for the new layout, so the continued run differs from the
# uninterrupted one only by the rounding of the other layout's sums: losses
# within 1e-5 relative (5e-5 absolute at losses of ~5-11), grad norms within
# 1e-4 relative, over the 5 steps after the resume.
#  - TP2 x DP1 (grad_accum 2) -> TP1 x DP1 (1 rank, grad_accum 2) and
#    -> TP1 x DP2 (grad_accum 1: the same global batch);
#  - DP2 x TP1, ZeRO-1 (each rank's m, v slices) -> TP2 x DP1 (grad_accum 2);
#  - bf16 (params16 resharded, not rounded from the master weights) TP2 -> TP1;
#  - the resharded checkpoint's next save at TP1 resumes bitwise at TP1.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/lib-train.sh"
cat > "$tmp/job.yaml" <<YAML
model: {name: tiny}
data: {train: "$tmp/data/train_*.bin"}
train: {micro_batch: 4, seq_len: 32, steps: 10, threads: 1, grad_accum: 2}
optim: {lr: 1e-3, warmup_steps: 2, schedule: cosine, weight_decay: 0.1}
parallel: {tensor: 2}
comm: {timeout_ms: 20000, bucket_kb: 64}
YAML
resharded() { # resharded NAME FROM TO: the resume said it resharded
  grep -q "resharded .* from parallel.tensor=$2, pipeline=1 to $3, 1" "$tmp/$1.log" && pass "$1: resumed, resharded TP$2 -> TP$3" \
    || fail "$1: no reshard line: $(grep -hE 'ckpt|ERROR' "$tmp/$1.log" | head -3)"
}
TP1="--set parallel.tensor=1"

# ---- TP2 x DP1 -> TP1 x DP1, TP1 x DP2
train_job straight 0 2
train_job save 75 2 --set ckpt.dir="$tmp/k" --set train.stop_after=5
cp -r "$tmp/k" "$tmp/k2"
train_job one 0 1 $TP1 --set ckpt.dir="$tmp/k" --resume latest
resharded one 2 1
compare_steps "TP2 -> TP1 (1 rank): steps 6..10 vs the uninterrupted TP2 run" "$tmp/one.json" "$tmp/straight.json" 6 10 5e-5 1e-4
train_job dp2 0 2 $TP1 --set train.grad_accum=1 --set ckpt.dir="$tmp/k2" --resume latest
resharded dp2 2 1
compare_steps "TP2 -> TP1 x DP2: steps 6..10 vs the uninterrupted TP2 run" "$tmp/dp2.json" "$tmp/straight.json" 6 10 5e-5 1e-4

# ---- the resharded run's own checkpoint (step 10, TP1) resumes bitwise at TP1
train_job one_more 0 1 $TP1 --set ckpt.dir="$tmp/k" --resume latest --set train.steps=12
grep -q "resumed from .*step-00000010" "$tmp/one_more.log" && ! grep -q resharded "$tmp/one_more.log" \
  && pass "the TP1 checkpoint written after a reshard resumes at TP1 without resharding" \
  || fail "resume of the resharded run's checkpoint: $(grep -hE 'ckpt|ERROR' "$tmp/one_more.log" | head -3)"

# ---- DP2 x TP1 (ZeRO-1: m, v saved in slices) -> TP2 x DP1
train_job straight_dp 0 2 $TP1 --set train.grad_accum=1 --set optim.zero=1
train_job save_dp 75 2 $TP1 --set train.grad_accum=1 --set optim.zero=1 --set ckpt.dir="$tmp/kdp" --set train.stop_after=5
train_job tp2 0 2 --set ckpt.dir="$tmp/kdp" --resume latest
resharded tp2 1 2
compare_steps "DP2 x TP1 ZeRO-1 -> TP2 x DP1: steps 6..10 vs the uninterrupted DP2 run" "$tmp/tp2.json" "$tmp/straight_dp.json" 6 10 5e-5 1e-4

# ---- bf16: the fp32 master weights are resharded (the 16-bit weights are their rounding)
train_job straight16 0 2 --set train.precision=bf16
train_job save16 75 2 --set train.precision=bf16 --set ckpt.dir="$tmp/k16" --set train.stop_after=5
train_job one16 0 1 $TP1 --set train.precision=bf16 --set ckpt.dir="$tmp/k16" --resume latest
resharded one16 2 1
grep -q "no 16-bit weights" "$tmp/one16.log" && fail "bf16: params16 was rounded from the master weights, not resharded" \
  || pass "bf16: params16 read from the checkpoint's pieces"
compare_steps "bf16 TP2 -> TP1: steps 6..10 vs the uninterrupted TP2 run" "$tmp/one16.json" "$tmp/straight16.json" 6 10 5e-5 1e-4

# ---- pipeline stages (3 blocks: uneven) save their own regions
cat > "$tmp/job.yaml" <<YAML
model: {name: tiny, layers: 3}
data: {train: "$tmp/data/train_*.bin"}
train: {micro_batch: 2, seq_len: 32, steps: 8, threads: 1, grad_accum: 4}
optim: {lr: 1e-3, warmup_steps: 2, weight_decay: 0.1}
parallel: {pipeline: 2}
comm: {timeout_ms: 20000, transport: libfabric}
YAML
train_job pstraight 0 2
train_job psave 75 2 --set ckpt.dir="$tmp/kp" --set train.stop_after=4
cp -r "$tmp/kp" "$tmp/kp2"
train_job presume 0 2 --set ckpt.dir="$tmp/kp" --resume latest
if [ "$(yk_steps "$tmp/pstraight.json" | wc -l)" = 8 ] &&
   diff <(yk_steps "$tmp/pstraight.json") <(yk_steps "$tmp/psave.json" "$tmp/presume.json") > "$tmp/diff"; then
  pass "PP2: 8 steps == 4 + resume + 4, losses and norms bitwise"
else fail "PP2 resume: $(head -4 "$tmp/diff")"; fi
train_job pone 0 1 --set parallel.pipeline=1 --set ckpt.dir="$tmp/kp2" --resume latest
grep -q "from parallel.tensor=1, pipeline=2 to 1, 1" "$tmp/pone.log" && pass "PP2 -> PP1: resharded" \
  || fail "PP2 -> PP1: $(grep -hE 'ckpt|ERROR' "$tmp/pone.log" | head -3)"
compare_steps "PP2 -> PP1 (1 rank): steps 5..8 vs the uninterrupted PP2 run" "$tmp/pone.json" "$tmp/pstraight.json" 5 8 5e-5 1e-4
train_job ostraight 0 1 --set parallel.pipeline=1
train_job osave 75 1 --set parallel.pipeline=1 --set ckpt.dir="$tmp/ko" --set train.stop_after=4
train_job opp2 0 2 --set ckpt.dir="$tmp/ko" --resume latest
grep -q "from parallel.tensor=1, pipeline=1 to 1, 2" "$tmp/opp2.log" && pass "PP1 -> PP2: resharded" \
  || fail "PP1 -> PP2: $(grep -hE 'ckpt|ERROR' "$tmp/opp2.log" | head -3)"
compare_steps "PP1 -> PP2: steps 5..8 vs the uninterrupted 1-rank run" "$tmp/opp2.json" "$tmp/ostraight.json" 5 8 5e-5 1e-4
finish
