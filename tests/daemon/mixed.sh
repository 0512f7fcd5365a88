#!/usr/bin/env bash
# FP16/BF16 mixed precision in yoke train:
#  - fp16 and bf16 track fp32: after 200 steps the validation loss is within 4%
#    of fp32's (16-bit weights, activations and gradients, fp32 master and
#    moments);
#  - fp16 and bf16 runs are deterministic (same seed: identical losses);
#  - 16-bit gradients halve the bytes all-reduced per step (2 ranks, mpirun);
#  - overflow injection (loss_scale.init=1e20): steps are skipped, the scale
#    backs off, then training recovers and the loss goes down;
#  - at the minimum scale: on_min=stop ends with a message naming the tensor
#    and the rank; on_min=continue keeps going;
#  - 2 ranks in fp16 hold identical weights.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/lib-train.sh"
cat > "$tmp/job.yaml" <<YAML
model: {name: tiny}
data: {train: "$tmp/data/train_*.bin", val: "$tmp/data/val_*.bin"}
train: {micro_batch: 8, seq_len: 64, steps: 200, threads: 1, val_batches: 8}
optim: {lr: 3e-3, warmup_steps: 10, schedule: cosine, min_lr: 3e-4}
YAML
field() { grep '"done": true' "$1" | head -1 | sed "s/.*\"$2\": \"*\([0-9a-f.e+-]*\).*/\1/"; }

for p in fp32 fp16 bf16; do
  "$YOKE" train "$tmp/job.yaml" --json --set train.precision=$p > "$tmp/$p.json" 2> "$tmp/$p.log" \
    && pass "$p trains" || fail "$p: $(tail -2 "$tmp/$p.log")"
done
v32=$(field "$tmp/fp32.json" val_loss)
for p in fp16 bf16; do
  v=$(field "$tmp/$p.json" val_loss)
  awk -v a="$v" -v b="$v32" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 0.04 * b) }' \
    && pass "$p val loss $v within 4% of fp32 $v32" || fail "$p val loss $v vs fp32 $v32"
done

# Determinism with 16-bit weights, activations and gradients: a second fp16
# and bf16 run print the same losses, bit for bit as printed.
for p in fp16 bf16; do
  "$YOKE" train "$tmp/job.yaml" --json --set train.precision=$p > "$tmp/${p}b.json" 2>/dev/null
  n=$(grep -c '"loss": ' "$tmp/$p.json")
  [ "$n" -gt 0 ] && diff <(grep -o '"loss": [0-9.e+-]*' "$tmp/$p.json") <(grep -o '"loss": [0-9.e+-]*' "$tmp/${p}b.json") > /dev/null \
    && pass "$p: two runs print identical losses ($n lines)" || fail "$p runs differ"
done

# Bytes on the wire: 2 ranks, fp32 vs fp16.
for p in fp32 fp16; do
  $MPIRUN -np 2 "$YOKE" train "$tmp/job.yaml" --json --set train.precision=$p --set train.steps=3 \
    --set comm.transport=mpi --set coord.port=$YK_PORT --set data.val= > "$tmp/b$p.json" 2> "$tmp/b$p.log" || fail "2-rank $p: $(grep ERROR "$tmp/b$p.log" | head -1)"
done
b32=$(grep -o '"allreduce_bytes": [0-9]*' "$tmp/bfp32.json" | head -1 | grep -o '[0-9]*$')
b16=$(grep -o '"allreduce_bytes": [0-9]*' "$tmp/bfp16.json" | head -1 | grep -o '[0-9]*$')
[ -n "$b32" ] && [ -n "$b16" ] && [ $((b16 * 2)) = "$b32" ] && pass "fp16 all-reduces half the bytes ($b16 vs $b32)" \
  || fail "bytes per step fp16=$b16 fp32=$b32"
sums=$(grep -o '"params_checksum": "[0-9a-f]*"' "$tmp/bfp16.json" | sort -u | wc -l)
[ "$(grep -c '"done": true' "$tmp/bfp16.json")" = 2 ] && [ "$sums" = 1 ] && pass "2 fp16 ranks hold identical weights" \
  || fail "fp16 ranks differ ($sums checksums)"

# Overflow injection.
"$YOKE" train "$tmp/job.yaml" --json --set train.precision=fp16 --set train.steps=60 --set loss_scale.init=1e20 \
  --set loss_scale.backoff=1e-3 --set loss_scale.hysteresis=1 > "$tmp/of.json" 2> "$tmp/of.log"
rc=$?
skipped=$(grep -c "gradient overflow in tensor" "$tmp/of.log")
[ $rc = 0 ] && [ "$skipped" -ge 3 ] && pass "overflow: $skipped steps skipped, run completes" || fail "overflow run rc=$rc skipped=$skipped"
grep -q "loss scale 1e+20 -> 1e+17" "$tmp/of.log" && pass "scale backs off by loss_scale.backoff" || fail "no backoff line"
vof=$(field "$tmp/of.json" val_loss)
awk -v a="$vof" 'BEGIN { exit !(a < 4.0) }' && pass "recovers: val loss $vof < 4.0" || fail "no recovery: val loss $vof"

# Minimum-scale policy.
"$YOKE" train "$tmp/job.yaml" --set train.precision=fp16 --set train.steps=20 --set loss_scale.init=1e20 \
  --set loss_scale.min=1e12 --set loss_scale.backoff=1e-3 --set loss_scale.hysteresis=1 --set data.val= > /dev/null 2> "$tmp/stop.log"
rc=$?
[ $rc = 1 ] && grep -q "overflow at the minimum loss scale 1e+12: tensor 'wte' on rank 0" "$tmp/stop.log" \
  && pass "on_min=stop names tensor and rank, exit 1" || fail "on_min=stop: rc=$rc $(grep ERROR "$tmp/stop.log")"
"$YOKE" train "$tmp/job.yaml" --set train.precision=fp16 --set train.steps=20 --set loss_scale.init=1e20 \
  --set loss_scale.min=1e12 --set loss_scale.backoff=1e-3 --set loss_scale.hysteresis=1 --set loss_scale.on_min=continue \
  --set data.val= > /dev/null 2> "$tmp/cont.log"
rc=$?
[ $rc = 0 ] && grep -q "on_min=continue" "$tmp/cont.log" && pass "on_min=continue goes on at the floor" || fail "on_min=continue rc=$rc"
finish
