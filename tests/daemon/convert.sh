#!/usr/bin/env bash
# `yoke ckpt convert --layout` and the exports from any layout, with real
# training runs (yoke launch, libfabric) of a tiny GPT-2 (3 blocks: the PP2
# split is uneven):
#  - a TP2 x PP2 checkpoint converted offline to TP1 x PP1, to TP1 x PP2 and
#    to DP2 (ZeRO-1) loads bitwise what a resume resharding the original
#    while loading does: the 4 steps after it print the same losses and
#    grad norms and end on the same params checksum; the converted one
#    resumes without resharding;
#  - GPT-2 and safetensors exports of checkpoints saved at TP2 x PP2, at PP2
#    and at DP2 x PP2 with ZeRO-1 (each rank's slice of each stage) equal the
#    export of the same 8 steps trained on one rank within 1e-5 absolute per
#    weight (the layouts sum in another order: measured < 1e-6), and the
#    export of a converted checkpoint equals its original's bitwise;
#  - bad --layout values are one line naming them, exit 2.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/lib-train.sh"
cat > "$tmp/job.yaml" <<YAML
model: {name: tiny, layers: 3}
data: {train: "$tmp/data/train_*.bin"}
train: {micro_batch: 2, seq_len: 32, steps: 8, threads: 1, grad_accum: 4}
optim: {lr: 1e-3, warmup_steps: 2, weight_decay: 0.1}
comm: {timeout_ms: 20000, transport: libfabric}
YAML
TP2PP2="--set parallel.tensor=2 --set parallel.pipeline=2"
# same NAME A B: runs A and B print the same steps (bitwise) and the same final params checksum
same() {
  local sa sb
  sa=$(grep -ho "params checksum [0-9a-f]*" "$tmp/$2.log" | tail -1)
  sb=$(grep -ho "params checksum [0-9a-f]*" "$tmp/$3.log" | tail -1)
  if [ "$(yk_steps "$tmp/$2.json" | wc -l)" = 4 ] && diff <(yk_steps "$tmp/$2.json") <(yk_steps "$tmp/$3.json") > "$tmp/diff" &&
     [ -n "$sa" ] && [ "$sa" = "$sb" ]; then pass "$1: steps 5..8 and $sa bitwise"
  else fail "$1: $(head -3 "$tmp/diff") ($sa / $sb)"; fi
}
# close NAME A B TOL: two weights files (GPT-2 or safetensors) have the same header and every weight within TOL
close() {
  python3 - "$2" "$3" "$4" <<'PY' > "$tmp/close" 2>&1 && pass "$1: $(cat "$tmp/close")" || fail "$1: $(cat "$tmp/close")"
import array, json, struct, sys
def load(p):
    b = open(p, 'rb').read()
    if p.endswith('.safetensors'):
        n = struct.unpack('<Q', b[:8])[0]
        h = json.loads(b[8:8 + n]); h.pop('__metadata__', None)
        return h, b[8 + n:]
    return b[:1024], b[1024:]
(ha, da), (hb, db) = load(sys.argv[1]), load(sys.argv[2])
if ha != hb: sys.exit("headers differ")
a, b = array.array('f', da), array.array('f', db)
if len(a) != len(b) or not a: sys.exit("%d vs %d weights" % (len(a), len(b)))
mx = max(abs(x - y) for x, y in zip(a, b))
print("%d weights, max |diff| %.3g (<= %s)" % (len(a), mx, sys.argv[3]))
sys.exit(0 if mx <= float(sys.argv[3]) else 1)
PY
}

# ---- the runs: one rank, TP2 x PP2 (a checkpoint at step 4 and 8), PP2, DP2 x PP2 ZeRO-1
train_job one 0 1 --set ckpt.dir="$tmp/e1"
train_job tpp 0 4 $TP2PP2 --set ckpt.dir="$tmp/e4" --set ckpt.every=4
train_job pp2 0 2 --set parallel.pipeline=2 --set ckpt.dir="$tmp/e2"
train_job dpp 0 4 --set parallel.pipeline=2 --set train.grad_accum=2 --set optim.zero=1 --set ckpt.dir="$tmp/ed"

# ---- offline conversion == resharding while loading
K4="$tmp/e4/step-00000004"
conv() { # conv NAME LAYOUT: convert K4 to $tmp/NAME
  "$YOKE" ckpt convert "$K4" --layout "$2" --out "$tmp/$1" > "$tmp/$1.out" 2>&1 && pass "convert --layout $2" \
    || fail "convert --layout $2: $(cat "$tmp/$1.out")"
}
resume_pair() { # resume_pair NAME CONVERTED RANKS args...: resume from CONVERTED and from K4 (resharding), compare
  local name=$1 conv=$2 n=$3; shift 3
  mkdir -p "$tmp/r-$name"
  train_job "$name-c" 0 "$n" "$@" --set ckpt.dir="$tmp/$conv" --resume latest
  train_job "$name-r" 0 "$n" "$@" --set ckpt.dir="$tmp/r-$name" --resume "$K4"
  grep -q "resharded" "$tmp/$name-r.log" && ! grep -q "resharded" "$tmp/$name-c.log" \
    && pass "$name: the original reshards while loading, the converted one does not" \
    || fail "$name: resharding lines: $(grep -h resharded "$tmp/$name-r.log" "$tmp/$name-c.log" | head -2)"
  same "$name: converted vs resharded resume" "$name-c" "$name-r"
}
conv k11 tp=1,pp=1
resume_pair tp1pp1 k11 1
conv k12 tp=1,pp=2
resume_pair tp1pp2 k12 2 --set parallel.pipeline=2
conv kd2 tp=1,pp=1,dp=2
grep -q "dp=2 x tp=1 x pp=1, train.grad_accum=2" "$tmp/kd2.out" && pass "DP2: grad_accum halved to keep the global batch" \
  || fail "DP2 convert line: $(cat "$tmp/kd2.out")"
resume_pair dp2 kd2 2 --set train.grad_accum=2 --set optim.zero=1

# ---- exports from any layout
for k in e1 e4 e2 ed k11; do
  "$YOKE" ckpt convert "$tmp/$k" --export-gpt2 "$tmp/$k.bin" > /dev/null 2> "$tmp/x.err" &&
    "$YOKE" ckpt convert "$tmp/$k" --export-safetensors "$tmp/$k.safetensors" > /dev/null 2>> "$tmp/x.err" ||
    fail "export of $k: $(cat "$tmp/x.err")"
done
for f in bin safetensors; do
  close "$f export: TP2 x PP2 vs 1 rank" "$tmp/e1.$f" "$tmp/e4.$f" 1e-5
  close "$f export: PP2 vs 1 rank" "$tmp/e1.$f" "$tmp/e2.$f" 1e-5
  close "$f export: DP2 x PP2 ZeRO-1 vs 1 rank" "$tmp/e1.$f" "$tmp/ed.$f" 1e-5
done
"$YOKE" ckpt convert "$tmp/e4" --layout tp=1,pp=1 --out "$tmp/k8" > /dev/null 2>&1 &&
  "$YOKE" ckpt convert "$tmp/k8" --export-gpt2 "$tmp/k8.bin" > /dev/null 2>&1 && cmp -s "$tmp/k8.bin" "$tmp/e4.bin" \
  && pass "the export of a converted checkpoint equals its original's, bitwise" || fail "converted export differs"

# ---- bad layouts: one line naming the value, exit 2
expect_fail 2 "tp=3 does not divide the heads" "$YOKE" ckpt convert "$K4" --layout tp=3,pp=1 --out "$tmp/x"
expect_stderr "parallel.tensor=3 does not divide" "$YOKE" ckpt convert "$K4" --layout tp=3,pp=1 --out "$tmp/x"
expect_stderr "'xp=2' is not one of tp=, pp=, dp=, v=" "$YOKE" ckpt convert "$K4" --layout tp=1,xp=2 --out "$tmp/x"
expect_stderr "pp=0 is not a degree" "$YOKE" ckpt convert "$K4" --layout tp=1,pp=0 --out "$tmp/x"
expect_fail 2 "--layout without --out" "$YOKE" ckpt convert "$K4" --layout tp=1,pp=1
expect_stderr "parallel.stage_layers=\"1,1\" sums to 2 layers" "$YOKE" ckpt convert "$K4" --layout tp=1,pp=2 --stage-layers 1,1 --out "$tmp/x"
finish
