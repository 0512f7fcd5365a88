#!/usr/bin/env bash
# yoke plan and the memory check of yoke train (docs/memory.md):
#  - the plan the training process made (predicted_peak_bytes in the --json
#    summary) is within 10% of its measured VmHWM (peak_rss_bytes): tiny and
#    small, fp32 and bf16, one rank; tiny fp32/bf16 on 2 ranks with ZeRO 0, 1, 3;
#  - yoke plan --json gives peak_bytes and every item, and the items add up;
#  - a job that cannot fit (train.memory_limit=10MB; d48 at its real size when
#    the plan says it exceeds this host) is refused with one message naming
#    the largest items and what would make it fit, before it allocates.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/lib-train.sh"
base=(--set data.train="$tmp/data/train_*.bin" --set train.micro_batch=4 --set train.seq_len=64 --steps 3 --json)
# ratio FILE: predicted / measured of every rank's summary, one per line
ratio() { sed -n 's/.*"peak_rss_bytes": \([0-9]*\), "predicted_peak_bytes": \([0-9]*\).*/\2 \1/p' "$1" |
  awk '{ printf "%.4f\n", $1 / $2 }'; }
check() { # check NAME FILE RANKS
  local r n=0 bad=""
  for r in $(ratio "$2"); do n=$((n + 1)); close_to "$r" 1 0.10 || bad="$bad $r"; done
  if [ "$n" = "$3" ] && [ -z "$bad" ]; then pass "$1: plan within 10% of VmHWM ($(ratio "$2" | tr '\n' ' '))"
  else fail "$1: $n of $3 ranks reported, ratios out of 10%:$bad ($(ratio "$2" | tr '\n' ' '))"; fi
}
for m in tiny small; do
  for p in fp32 bf16; do
    "$YOKE" train "${base[@]}" --set model.name=$m --set train.precision=$p > "$tmp/$m$p.json" 2> "$tmp/$m$p.log"
    check "$m $p 1 rank" "$tmp/$m$p.json" 1
  done
done
for p in fp32 bf16; do
  for z in 0 1 3; do
    "$YOKE" launch -n 2 -- train "${base[@]}" --set model.name=tiny --set train.precision=$p --set optim.zero=$z \
      --set coord.port=$YK_PORT > "$tmp/z$z$p.json" 2> "$tmp/z$z$p.log"
    check "tiny $p 2 ranks ZeRO-$z" "$tmp/z$z$p.json" 2
  done
done

# yoke plan --json: the items add up to steady_bytes; peak >= steady.
"$YOKE" plan --ranks 2 --set model.name=d12 --set train.precision=bf16 --set optim.zero=1 --json > "$tmp/plan.json"
if python3 - "$tmp/plan.json" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 2, rows
for r in rows:
    items = sum(v for k, v in r.items() if k.endswith("_bytes") and k not in
                ("peak_bytes", "steady_bytes", "mem_total_bytes", "mem_available_bytes", "startup_bytes"))
    assert items == r["steady_bytes"] and r["peak_bytes"] >= r["steady_bytes"], r
    # bf16 ZeRO-1: the fp32 arena is the master and the only copy of the weights
    assert r["weights16_bytes"] == 0 and r["master_bytes"] == 0 and r["grads16_bytes"] == 0, r
    assert r["moments_bytes"] > 0 and r["weights_bytes"] > 0, r
PY
then pass "yoke plan --json: peak_bytes and items that add up"; else fail "yoke plan --json: $(head -c 400 "$tmp/plan.json")"; fi

# Refused before allocating: the message names the peak, the largest items and a fix.
"$YOKE" train "${base[@]}" --set model.name=small --set train.memory_limit=10MB > /dev/null 2> "$tmp/limit.log"
rc=$?
if [ "$rc" != 0 ] && grep -q "does not fit.*largest: .*it would fit with" "$tmp/limit.log" &&
   ! grep -q "memory: model state" "$tmp/limit.log"; then pass "train.memory_limit=10MB: refused before the engine was built"
else fail "train.memory_limit=10MB: exit $rc: $(tail -2 "$tmp/limit.log")"; fi
if "$YOKE" plan --set model.name=d48 --set train.micro_batch=1 --set train.seq_len=256 | grep -q "does NOT fit"; then
  start=$(date +%s)
  timeout 60 "$YOKE" train "${base[@]}" --set model.name=d48 --set train.micro_batch=1 --set train.seq_len=256 \
    > /dev/null 2> "$tmp/d48.log"
  rc=$?
  if [ "$rc" != 0 ] && [ "$rc" != 124 ] && grep -q "does not fit.*MemAvailable" "$tmp/d48.log"; then
    pass "d48 fp32: refused up front in $(( $(date +%s) - start )) s: $(grep -o 'largest: [^;]*' "$tmp/d48.log")"
  else fail "d48: exit $rc: $(tail -2 "$tmp/d48.log")"; fi
else
  pass "d48 fits this host's MemAvailable: nothing to refuse"
fi
finish
