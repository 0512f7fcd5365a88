#!/bin/bash
# `yoke bench scale` on the tiny preset: bad options are refused with a
# message, and --repeat/--json give every row the issue asks for (yoke 1 and
# 2 ranks, the independent-jobs ceiling, precisions, grad_accum), with sane
# values.
source "$YK_SOURCE_DIR/tests/lib.sh"
expect_fail 2 "bench scale --repeat 0 is refused" "$YOKE" bench scale --repeat 0
expect_stderr "--repeat needs an integer in [1, 64], got '0'" "$YOKE" bench scale --repeat 0
expect_fail 2 "bench scale --launcher bogus is refused" "$YOKE" bench scale --launcher bogus
expect_ok "bench scale --help" "$YOKE" bench scale --help

OUT=$(mktemp /tmp/yk_bench_scale.XXXXXX)
if timeout 240 "$YOKE" bench scale --models tiny --precision-model tiny --batch 2 --seq-len 32 --steps 2 --repeat 2 \
     --no-torch --json > "$OUT" 2> "$OUT.err"; then
  pass "bench scale on tiny shapes ran"
else
  fail "bench scale on tiny shapes: $(tail -5 "$OUT")"
fi
# one JSON row per figure; efficiency of the 2-rank and independent rows is a fraction (not a percentage)
# in (0, 5]: tiny steps of 1-3 ms swing by 2x on a loaded 2-core host, which the medians of 2 rounds
# cannot smooth (the real figures come from d6/d12 runs, docs/training.md)
/usr/bin/python3 - "$OUT" <<'PY' && pass "bench scale --json: yoke 1/2 ranks, independent, 3 precisions, 3 grad_accum rows" || fail "bench scale --json rows: $(cat "$OUT")"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
need = ("impl", "model", "precision", "ranks", "grad_accum", "tokens_per_s", "ms_per_step", "comm_wait_frac", "efficiency")
assert all(all(k in r for k in need) for r in rows), rows
scale = [r for r in rows if r.get("rounds") == 2]
kinds = sorted((r["impl"], r["ranks"]) for r in scale)
assert kinds == [("independent", 2), ("yoke", 1), ("yoke", 2)], kinds
for r in scale:
    assert r["ms_per_step"] > 0 and 0 < r["efficiency"] <= 5, r
prec = sorted(r["precision"] for r in rows if "time_vs_fp32" in r)
assert prec == ["bf16", "fp16", "fp32"], prec
acc = [r for r in rows if "allreduce_bytes_per_sample" in r]
assert sorted(r["grad_accum"] for r in acc) == [1, 2, 4], acc
b = {r["grad_accum"]: r["allreduce_bytes_per_sample"] for r in acc}
# grad_accum = k cuts all-reduce bytes per sample by k
assert abs(b[1] / b[2] - 2) < 1e-6 and abs(b[1] / b[4] - 4) < 1e-6, b
PY
# each round sets its 2-rank run against a 1-rank run before and one after it
if [ "$(grep -cE '^# round [12]/2 of tiny: yoke 1 rank [0-9.]+ and [0-9.]+ ms, 2 ranks [0-9.]+ ms' "$OUT.err")" = 2 ]; then
  pass "bench scale: two rounds, each with 1-rank runs before and after the 2-rank run"
else
  fail "bench scale round lines: $(cat "$OUT.err")"
fi
rm -f "$OUT" "$OUT.err"
finish
