#!/usr/bin/env bash
# Tensor parallelism with real processes (`yoke launch`, the local launcher):
#  - `launch -n 2` with parallel.tensor=2 prints its layout line once, and its
#    losses and weights (train.save_weights) match a 1-rank run's;
#  - checkpoints under TP: 10 steps straight == 5 (train.stop_after) + resume
#    + 5, losses and norms bitwise and the same params checksum on every rank,
#    at TP2 (dp 1: the TP ranks agree on the stop without a dp group) and at
#    DP2 x TP2 with ZeRO-0..3, with and without sequence parallelism;
#  - a DP2 x TP2 ZeRO-3 checkpoint resumes at DP1 x TP2 (grad_accum 2, the
#    same global batch) within 1e-4 of the straight run; a TP2 checkpoint's
#    GPT-2 export (the pieces put together) equals --save-weights byte for
#    byte (resuming at another TP degree: reshard.sh);
#  - layout errors, one line each naming the value, before any allocation;
#  - a rank killed -9 in the middle of TP all-reduces: the other rank ends
#    with an error naming it within the deadline, and no process is left.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/lib-train.sh"
cat > "$tmp/job.yaml" <<YAML
model: {name: tiny}
data: {train: "$tmp/data/train_*.bin"}
train: {micro_batch: 4, seq_len: 32, steps: 10, threads: 1}
optim: {lr: 1e-3, warmup_steps: 2, schedule: cosine, weight_decay: 0.1}
parallel: {tensor: 2}
comm: {timeout_ms: 20000, bucket_kb: 64}
YAML
# "RANK CHECKSUM" of every rank's final line
sums() { cat "$@" | sed -n 's/.*"done": true, "rank": \([0-9]*\),.*"params_checksum": "\([0-9a-f]*\)".*/\1 \2/p' | sort; }

# ---- TP2 against one rank; the layout line
train_job one 0 1 --set parallel.tensor=1 --save-weights "$tmp/one.bin"
train_job tp 0 2 --save-weights "$tmp/tp.bin"
n=$(grep -c "layout: 2 ranks = dp 1 x tp 2 x pp 1; rank 0 = (dp 0, tp 0)" "$tmp/tp.log")
[ "$n" = 1 ] && pass "launch -n 2, parallel.tensor=2: the layout line printed once" || fail "layout line $n times: $(grep layout "$tmp/tp.log")"
compare_steps "TP2 vs 1 rank, 10 steps (loss within 5e-4 = 1e-4 relative)" "$tmp/tp.json" "$tmp/one.json" 1 10 5e-4 1e-3
diff=$(python3 - "$tmp/one.bin" "$tmp/tp.bin" <<'EOF'
import array, sys
def load(p):
    b = open(p, 'rb').read(); a = array.array('f'); a.frombytes(b[1024:]); return a
a, b = load(sys.argv[1]), load(sys.argv[2])
print(max(abs(x - y) for x, y in zip(a, b)) if len(a) == len(b) and len(a) > 0 else 'size')
EOF
)
num_test "$diff" "<" 1e-4 && pass "TP2 trained weights == 1 rank's within 1e-4 (max |diff| $diff)" || fail "TP2 weights differ: $diff"

# ---- bitwise resume: TP2 (dp 1), then DP2 x TP2 at each ZeRO stage
resume_case() { # resume_case NAME RANKS STRAIGHT_JSON args...
  local name=$1 n=$2 straight=$3; shift 3
  train_job k$name 75 "$n" --set ckpt.dir="$tmp/k$name" --set train.stop_after=5 "$@"
  cp -r "$tmp/k$name" "$tmp/k${name}copy"
  train_job r$name 0 "$n" --set ckpt.dir="$tmp/k$name" --resume latest "$@"
  if [ "$(yk_steps "$straight" | wc -l)" = 10 ] &&
     diff <(yk_steps "$straight") <(yk_steps "$tmp/k$name.json" "$tmp/r$name.json") > "$tmp/diff"; then
    pass "$name: 10 steps == 5 + resume + 5, losses and norms bitwise"
  else fail "$name resume: $(head -4 "$tmp/diff")"; fi
  local s1 s2
  s1=$(sums "$straight"); s2=$(sums "$tmp/r$name.json")
  [ "$(echo "$s1" | wc -l)" = "$n" ] && [ "$s1" = "$s2" ] && pass "$name: the same params checksum on every rank after the resume" \
    || fail "$name checksums: '$(echo $s1)' vs '$(echo $s2)'"
}
resume_case tp2 2 "$tmp/tp.json"
for c in "0 false" "1 true" "2 false" "3 true"; do
  set -- $c
  train_job s$1 0 4 --set optim.zero=$1 --set parallel.sequence=$2
  resume_case dp2tp2-zero$1-sp$2 4 "$tmp/s$1.json" --set optim.zero=$1 --set parallel.sequence=$2
done

# ---- another data-parallel degree, another TP degree, the export
train_job d21 0 2 --set optim.zero=3 --set parallel.sequence=true --set ckpt.dir="$tmp/kdp2tp2-zero3-sptruecopy" --resume latest \
  --set train.grad_accum=2
grep -q "step 5, written by 4 ranks, now 2" "$tmp/d21.log" && pass "DP2 x TP2 -> DP1 x TP2: resumed" \
  || fail "DP2->DP1 resume line: $(grep -E 'ckpt|ERROR' "$tmp/d21.log" | head -2)"
compare_steps "ZeRO-3 DP2 x TP2 -> DP1 x TP2: steps 6..10 vs the straight run" "$tmp/d21.json" "$tmp/s3.json" 6 10 1e-4 1e-5
expect_ok "export of the TP2 checkpoint" "$YOKE" ckpt convert "$tmp/ktp2" --export-gpt2 "$tmp/x.bin"
cmp -s "$tmp/x.bin" "$tmp/tp.bin" && pass "TP2: exported GPT-2 file == --save-weights file" || fail "TP2 export differs from --save-weights"

# ---- layout errors: one line naming the value, exit 2, before the model exists
layout_error() { # layout_error WHAT RANKS NEEDLE args...
  local what=$1 n=$2 needle=$3; shift 3
  "$YOKE" launch -n "$n" -- train "$tmp/job.yaml" --set coord.port=$YK_PORT "$@" > "$tmp/le.log" 2>&1; local rc=$?
  local lines; lines=$(grep -F "$needle" "$tmp/le.log" | grep -c "ERROR")
  if [ "$rc" != 0 ] && [ "$lines" -ge 1 ] && ! grep -q "memory:" "$tmp/le.log"; then
    pass "$what: $(grep -F "$needle" "$tmp/le.log" | grep ERROR | head -1 | sed 's/.*ERROR *//' | cut -c1-150)"
  else fail "$what (exit $rc): $(grep -E 'ERROR' "$tmp/le.log" | head -2)"; fi
}
layout_error "3 ranks, parallel.tensor=2" 3 "parallel.tensor can be 1, 3" --set parallel.tensor=2
layout_error "4 heads over parallel.tensor=3" 3 "parallel.tensor=3 does not divide model.heads=4"  --set parallel.tensor=3
layout_error "seq_len 31 under sequence parallelism" 2 "train.seq_len=31 is not divisible by parallel.tensor=2" \
  --set parallel.sequence=true --set train.seq_len=31
layout_error "3 ranks, parallel.pipeline=2" 3 "parallel.pipeline can be 1, 3" --set parallel.tensor=1 --set parallel.pipeline=2

# ---- kill -9 during tensor-parallel all-reduces (a step takes ~100+ ms)
cat > "$tmp/big.yaml" <<YAML
model: {name: small}
data: {train: "$tmp/data/train_*.bin"}
train: {micro_batch: 8, seq_len: 128, steps: 100000, threads: 1}
parallel: {tensor: 2}
comm: {timeout_ms: 4000}
coord: {heartbeat_timeout_ms: 60000}
YAML
"$YOKE" launch -n 2 -- train "$tmp/big.yaml" --set coord.port=$YK_PORT > "$tmp/kill.out" 2> "$tmp/kill.log" &
lp=$!
for _ in $(seq 150); do grep -q "step 3/" "$tmp/kill.log" 2>/dev/null && break; sleep 0.2; done
victim=""
for p in $(pgrep -P $lp); do tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -q '^YOKE_RANK=1$' && victim=$p; done
if [ -z "$victim" ]; then fail "no rank 1 process to kill"; kill -9 $lp 2>/dev/null
else
  t0=$(date +%s.%N)
  kill -9 "$victim"
  for _ in $(seq 150); do kill -0 $lp 2>/dev/null || break; sleep 0.1; done
  t1=$(date +%s.%N)
  kill -9 $lp 2>/dev/null; wait $lp 2>/dev/null
  el=$(echo "$t1 - $t0" | bc)
  if grep "r0 ERROR" "$tmp/kill.log" | grep -qi "rank 1"; then
    pass "rank 1 killed -9 during TP all-reduces: rank 0's error names it ($(grep 'r0 ERROR' "$tmp/kill.log" | head -1 | sed 's/.*ERROR *//' | cut -c1-120)); ended after ${el}s"
  else fail "kill -9: no error naming rank 1 on rank 0: $(tail -3 "$tmp/kill.log")"; fi
  num_test "$el" "<" 14 && pass "ended within the deadline (comm.timeout_ms 4 s): ${el}s" || fail "took ${el}s to end"
  sleep 0.2
  left=$(pgrep -f "train $tmp/big.yaml")
  [ -z "$left" ] && pass "no process left behind" || { fail "processes left: $left"; kill -9 $left; }
fi
finish
