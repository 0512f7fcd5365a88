#!/bin/bash
# The benchmarks on tiny shapes: their options, rows and labels, not their
# figures (the machine is shared: nothing here is timed against a bound).
# `yoke bench scale` on the tiny preset: bad options are refused with a
# message, and --repeat/--json give every row the issue asks for (yoke 1
# rank, 2 ranks with ZeRO-1 and without, labelled, the headline on ZeRO-1,
# the independent-jobs ceiling, precisions, grad_accum), with sane values.
# `yoke bench coll` and `yoke bench ckpt` further down.
source "$YK_SOURCE_DIR/tests/lib.sh"
expect_fail 2 "bench scale --repeat 0 is refused" "$YOKE" bench scale --repeat 0
expect_stderr "--repeat needs an integer in [1, 64], got '0'" "$YOKE" bench scale --repeat 0
expect_fail 2 "bench scale --launcher bogus is refused" "$YOKE" bench scale --launcher bogus
expect_ok "bench scale --help" "$YOKE" bench scale --help

# --png FILE: the benchmarks' figures come from common's one gnuplot helper;
# without gnuplot the PNG checks are skipped (and --png not asked for: it
# would fail the run, as a figure that cannot be drawn should)
is_png() { [ "$(head -c 8 "$1" 2>/dev/null | od -An -tx1 | tr -d ' ')" = 89504e470d0a1a0a ]; }
HAVE_GNUPLOT=0
command -v gnuplot > /dev/null && HAVE_GNUPLOT=1
[ $HAVE_GNUPLOT = 1 ] || echo "NOTE: gnuplot is not installed: the --png figures of bench scale, parallel and coll are not checked"
OUT=$(mktemp /tmp/yk_bench_scale.XXXXXX)
PNG=()
[ $HAVE_GNUPLOT = 1 ] && PNG=(--png "$OUT.png")
if timeout 240 "$YOKE" bench scale --models tiny --precision-model tiny --batch 2 --seq-len 32 --steps 2 --repeat 2 \
     --no-torch --json "${PNG[@]}" > "$OUT" 2> "$OUT.err"; then
  pass "bench scale on tiny shapes ran"
else
  fail "bench scale on tiny shapes: $(tail -5 "$OUT")"
fi
if [ $HAVE_GNUPLOT = 1 ]; then
  # one line per 2-rank row from its 1-rank base, and the ideal
  is_png "$OUT.png" && grep -q "^# plot written to $OUT.png\$" "$OUT" && [ "$(grep -c '^\$d[0-9] << EOD' "$OUT.png.gp")" = 3 ] \
    && grep -q "title 'tiny yoke (ZeRO-1)'" "$OUT.png.gp" && grep -q "100 title 'ideal'" "$OUT.png.gp" \
    && pass "bench scale --png: a PNG of efficiency against ranks (3 rows and the ideal)" \
    || fail "bench scale --png: $(grep -i plot "$OUT" "$OUT.err"; cat "$OUT.png.gp")"
fi
# one JSON row per figure; efficiency of the 2-rank and independent rows is a fraction (not a percentage)
# in (0, 5]: tiny steps of 1-3 ms swing by 2x on a loaded 2-core host, which the medians of 2 rounds
# cannot smooth (the real figures come from d6/d12 runs, docs/training.md)
/usr/bin/python3 - "$OUT" <<'PY' && pass "bench scale --json: yoke 1 rank, 2 ranks ZeRO-1 (headline) and no ZeRO, independent, 3 precisions, 3 grad_accum rows" || fail "bench scale --json rows: $(cat "$OUT")"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
need = ("impl", "model", "precision", "ranks", "grad_accum", "tokens_per_s", "ms_per_step", "comm_wait_frac", "efficiency")
assert all(all(k in r for k in need) for r in rows), rows
scale = [r for r in rows if r.get("rounds") == 2]
kinds = sorted((r["impl"], r["label"], r["ranks"], r["zero"]) for r in scale)
assert kinds == [("independent", "independent", 2, 0), ("yoke", "yoke", 1, 0), ("yoke", "yoke (ZeRO-1)", 2, 1),
                 ("yoke", "yoke (no ZeRO)", 2, 0)], kinds
for r in scale:
    assert r["ms_per_step"] > 0 and 0 < r["efficiency"] <= 5, r
# the headline is the ZeRO-1 row, and only that one
assert [r["label"] for r in scale if r["headline"]] == ["yoke (ZeRO-1)"], scale
# both 2-rank yoke rows all-reduce the same gradients; only the optimizer's split differs
two = [r for r in scale if r["impl"] == "yoke" and r["ranks"] == 2]
assert all(r["allreduce_bytes_per_step"] > 0 for r in two) and \
    two[0]["allreduce_bytes_per_step"] == two[1]["allreduce_bytes_per_step"], two
# the precision and grad_accum tables run the default (ZeRO-1) and say so
assert all(r["zero"] == 1 and r["label"] == "yoke (ZeRO-1)" for r in rows if r.get("efficiency") is None), rows
prec = sorted(r["precision"] for r in rows if "time_vs_fp32" in r)
assert prec == ["bf16", "fp16", "fp32"], prec
acc = [r for r in rows if "allreduce_bytes_per_sample" in r]
assert sorted(r["grad_accum"] for r in acc) == [1, 2, 4], acc
b = {r["grad_accum"]: r["allreduce_bytes_per_sample"] for r in acc}
# grad_accum = k cuts all-reduce bytes per sample by k
assert abs(b[1] / b[2] - 2) < 1e-6 and abs(b[1] / b[4] - 4) < 1e-6, b
PY
# each round sets both 2-rank runs against a 1-rank run before and one after them
if [ "$(grep -cE '^# round [12]/2 of tiny: yoke 1 rank [0-9.]+ and [0-9.]+ ms, 2 ranks ZeRO-1 [0-9.]+ ms \([0-9.]+%\), no ZeRO [0-9.]+ ms \([0-9.]+%\)' "$OUT.err")" = 2 ]; then
  pass "bench scale: two rounds, each with 1-rank runs before and after the ZeRO-1 and no-ZeRO 2-rank runs"
else
  fail "bench scale round lines: $(cat "$OUT.err")"
fi
# the text output says which row the headline efficiency is
if grep -qE '^# tiny: efficiency headline [0-9.]+% is the yoke \(ZeRO-1\) row .*yoke \(no ZeRO\) [0-9.]+%' "$OUT"; then
  pass "bench scale: the text names the ZeRO-1 row as the headline, the no-ZeRO figure beside it"
else
  fail "bench scale headline line: $(grep -v '^{' "$OUT")"
fi
rm -f "$OUT" "$OUT.err" "$OUT.png" "$OUT.png.gp"

# `yoke bench coll`: small messages are timed in batches of back-to-back
# calls, one rule for yoke, MPI and gloo. Every row says its batch; gloo's
# rows (when Debian's python3 has torch) must have yoke's batch at each size;
# without torch the bench must say gloo was skipped.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
OUT=$(mktemp /tmp/yk_bench_coll.XXXXXX)
HAVE_TORCH=0
/usr/bin/python3 -c 'import torch.distributed' >/dev/null 2>&1 && HAVE_TORCH=1
PNG=()
[ $HAVE_GNUPLOT = 1 ] && PNG=(--png "$OUT.png")
if timeout 200 mpirun -np 2 --bind-to none "$YOKE" bench coll --transport mpi --algo ring --dtype f32 -b 4K -e 256K -f 8 \
     --json "${PNG[@]}" > "$OUT" 2> "$OUT.err"; then
  pass "bench coll on 4K..256K ran"
  if [ $HAVE_GNUPLOT = 1 ]; then
    is_png "$OUT.png" && pass "bench coll --png wrote a PNG" \
      || fail "bench coll --png: $(grep -i plot "$OUT" "$OUT.err")"
  fi
else
  fail "bench coll on 4K..256K: $(tail -5 "$OUT.err")"
fi
/usr/bin/python3 - "$OUT" "$HAVE_TORCH" <<'PY' && pass "bench coll --json: calls_per_sample 50/10/1 at 4K/32K/256K for yoke and MPI, and gloo alike when torch is there" || fail "bench coll --json rows: $(cat "$OUT")"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
ar = [r for r in rows if r["op"] == "allreduce"]
want = {4096: 50, 32768: 10, 262144: 1}
for impl in ("yoke", "mpi") + (("gloo",) if sys.argv[2] == "1" else ()):
    got = {r["bytes"]: r["calls_per_sample"] for r in ar if r["impl"] == impl}
    assert got == want, (impl, got)
assert all(r["wrong"] == 0 and r["time_us"] > 0 for r in ar), ar
PY
if grep -qE '^# time per call: a sample is a batch of back-to-back calls, 1 from 262144 B, 10 from 16384 B, 50 from 0 B up \(yoke, MPI and gloo alike\)' "$OUT.err"; then
  pass "bench coll states its batching rule for yoke, MPI and gloo"
else
  fail "bench coll batching line: $(head -3 "$OUT.err")"
fi
if [ "$HAVE_TORCH" = 1 ]; then
  grep -q '^# torch.distributed gloo all-reduce .* small messages timed in batches of back-to-back calls as yoke and MPI are' "$OUT.err" &&
    pass "bench coll: the gloo table says it is batched like yoke and MPI" || fail "bench coll gloo header: $(cat "$OUT.err")"
else
  grep -q "^# gloo: skipped (Debian's /usr/bin/python3 has no torch)" "$OUT.err" &&
    pass "bench coll: no torch here, and the bench says gloo was skipped" || fail "bench coll gloo skip line: $(cat "$OUT.err")"
fi
rm -f "$OUT" "$OUT.err" "$OUT.png" "$OUT.png.gp"

# `yoke bench ckpt`: the step the stall is a fraction of is measured (yoke's
# own step of the model) unless --step-ms gives it, and the output says
# which; --adam-steps sets the fake AdamW steps of the synthetic m and v.
expect_fail 2 "bench ckpt --adam-steps 0 is refused" "$YOKE" bench ckpt --adam-steps 0
expect_fail 2 "bench ckpt --seq-len 2048 is refused (the table's maxT is 1024)" "$YOKE" bench ckpt --seq-len 2048
T=$(mktemp -d /tmp/yk_bench_ckpt.XXXXXX)
SHAPE=(--layers 1 --channels 64 --vocab 512 --repeat 1 --json)
if timeout 120 "$YOKE" bench ckpt "${SHAPE[@]}" --dir "$T/a" > "$T/measured" 2>&1 &&
   timeout 120 "$YOKE" bench ckpt "${SHAPE[@]}" --dir "$T/b" --step-ms 100 --adam-steps 5 --batch 2 > "$T/given" 2>&1; then
  pass "bench ckpt ran with a measured step and with --step-ms"
else
  fail "bench ckpt: $(tail -3 "$T/measured" "$T/given")"
fi
/usr/bin/python3 - "$T/measured" "$T/given" <<'PY' && pass "bench ckpt --json: step_source measured (B=4 T=64, the train defaults) or option (100 ms), adam_steps 3 or 5" || fail "bench ckpt json: $(cat "$T/measured" "$T/given")"
import json, sys
m, g = ([json.loads(l) for l in open(f) if l.startswith("{")][-1] for f in sys.argv[1:3])
assert m["step_source"] == "measured" and m["step_ms"] > 0 and m["step_batch"] == 4 and m["step_seq_len"] == 64, m
assert m["step_threads"] >= 1 and m["adam_steps"] == 3, m
assert abs(m["stall_frac"] - m["stall_s"] * 1e3 / m["step_ms"]) < 1e-9, m
assert g["step_source"] == "option" and g["step_ms"] == 100 and g["step_batch"] is None and g["adam_steps"] == 5, g
PY
if grep -qE '^  training step +[0-9]+ ms  measured: yoke.s step of this model on one rank, B=4 T=64, [0-9]+ threads, median of 3 after 1 warm-up' "$T/measured" &&
   grep -qE '^  training step +100 ms  given by --step-ms, not measured' "$T/given"; then
  pass "bench ckpt says whether the step was measured or given"
else
  fail "bench ckpt step line: $(grep -h 'step' "$T/measured" "$T/given")"
fi
rm -rf "$T"
# `yoke bench parallel` on the tiny preset, 2 steps, 2 rows (1 rank and TP2):
# bad options are refused, the table has its columns and the JSON rows
# every key the issue names, with the group bytes beside their formula.
expect_fail 2 "bench parallel --rows bogus is refused" "$YOKE" bench parallel --rows bogus
expect_stderr "no layout 'bogus'; choose from 1rank,dp2,tp2,tp2-sp,zero1,zero2,zero3" "$YOKE" bench parallel --rows bogus
expect_fail 2 "bench parallel --batch 3 is refused for a data-parallel row" "$YOKE" bench parallel --batch 3 --rows dp2
expect_ok "bench parallel --help" "$YOKE" bench parallel --help
OUT=$(mktemp /tmp/yk_bench_parallel.XXXXXX)
PNG=()
[ $HAVE_GNUPLOT = 1 ] && PNG=(--png "$OUT.png")
if timeout 120 "$YOKE" bench parallel --model tiny --batch 2 --seq-len 32 --steps 2 --rows 1rank,tp2 --json "${PNG[@]}" \
     > "$OUT" 2> "$OUT.err"; then
  pass "bench parallel on tiny shapes ran"
else
  fail "bench parallel on tiny shapes: $(tail -5 "$OUT.err")"
fi
if [ $HAVE_GNUPLOT = 1 ]; then
  # one data row per layout run: name, peak RSS MiB, planned peak MiB, tokens/s
  is_png "$OUT.png" && grep -q "^# plot written to $OUT.png\$" "$OUT" \
    && [ "$(grep -cE '^"(1 rank x 2 threads|TP2)" [0-9.]+ [0-9.]+ [0-9.]+$' "$OUT.png.gp")" = 2 ] \
    && pass "bench parallel --png: a PNG of peak RSS beside the planned peak, and tokens/s, per layout" \
    || fail "bench parallel --png: $(grep -i plot "$OUT" "$OUT.err"; cat "$OUT.png.gp")"
fi
if grep -qE '^# layout +ranks +ms/step +tokens/s +dp MB +\(theory\) +tp MB +\(theory\) +RSS MB +pred MB +ratio$' "$OUT" &&
   grep -qE '^#   TP2 step [0-9.]+ ms = [0-9.]+x the 1-rank 2-thread step [0-9.]+ ms: (met|MISSED)' "$OUT"; then
  pass "bench parallel: the table's columns and the TP2 target line"
else
  fail "bench parallel table: $(grep '^#' "$OUT")"
fi
/usr/bin/python3 - "$OUT" <<'PY' && pass "bench parallel --json: rows 1rank and tp2 with every key; tp bytes equal the formula, no dp bytes" || fail "bench parallel --json rows: $(cat "$OUT")"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
need = ("layout", "tp", "dp", "zero", "ms_per_step", "tokens_per_s", "peak_rss_bytes", "predicted_state_bytes",
        "predicted_peak_bytes", "comm_bytes", "isa")
assert [r["layout"] for r in rows] == ["1rank", "tp2"], rows
assert all(all(k in r for k in need) for r in rows), rows
one, tp = rows
assert (one["tp"], one["dp"], tp["tp"], tp["dp"]) == (1, 1, 2, 1), rows
for r in rows:
    assert r["ms_per_step"] > 0 and r["tokens_per_s"] > 0 and r["peak_rss_bytes"] > 0, r
    assert 0 < r["predicted_state_bytes"] < r["predicted_peak_bytes"], r
    assert set(r["comm_bytes"]) == {"dp", "tp"}, r
assert one["comm_bytes"]["tp"]["measured"] == 0 and one["comm_bytes"]["dp"]["measured"] == 0, one
t = tp["comm_bytes"]["tp"]
assert t["measured"] == t["theory"] > 0 and t["wire_per_rank"] == t["theory"], t   # n = 2: a ring moves the buffer once
PY
rm -f "$OUT" "$OUT.err" "$OUT.png" "$OUT.png.gp"
# bench pipeline: a fast smoke run, every schedule, JSON rows with the
# documented fields and sane values (the figures themselves are not tested)
if "$YOKE" bench pipeline --models small --microbatches 2 --steps 1 --warmup 0 --json > "$T.pipe" 2> "$T.pipe.err" &&
   python3 - "$T.pipe" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
assert [r["schedule"] for r in rows] == ["gpipe", "1f1b", "interleaved"], rows
for r in rows:
    assert r["pp"] == 2 and r["microbatches"] == 2 and r["vstages"] == (2 if r["schedule"] == "interleaved" else 1), r
    assert r["ms_per_step"] > 0 and 0 <= r["bubble_measured"] < 1 and r["peak_act_bytes"] > 0, r
    assert abs(r["bubble_theory"] - 1 / (r["vstages"] * 2 + 1)) < 1e-4, r
PY
then pass "bench pipeline: 3 schedules, JSON rows"; else fail "bench pipeline: $(tail -3 "$T.pipe.err" "$T.pipe")"; fi
rm -f "$T.pipe" "$T.pipe.err"
# bench elastic: a smoke run on tiny (1 kill, a grow, no torchrun: its
# restarts take seconds): JSON rows for both events with the documented
# fields, no completed step lost, no process or temporary directory left
# behind. YK_TEST_DELAY_RANK makes a step long enough to be killed inside.
expect_fail 2 "bench elastic: a global batch that does not divide over ranks - 1 is refused" \
  "$YOKE" bench elastic --models tiny --ranks 4 --accum 2 --no-torch
tmp0=$(ls -d /tmp/yk_bench_elastic_* 2>/dev/null | wc -l)
procs0=$(pgrep -f 'yk_bench_elastic_' | sort)
if YK_TEST_DELAY_RANK=-1:40 timeout 120 "$YOKE" bench elastic --models tiny --kill-after 4 --no-torch --timeout 60 \
     --seed 7 --json > "$T.el" 2> "$T.el.err" && python3 - "$T.el" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
assert sorted(r["event"] for r in rows) == ["grow", "kill"], rows
for r in rows:
    assert r["impl"] == "yoke" and r["model"] == "tiny", r
    assert all(k in r for k in ("detect_s", "reform_s", "restore_s", "resume_s", "steps_lost")), r
    assert r["steps_lost"] == 0 and 0 < r["resume_s"] < 60 and r["detect_s"] is not None, r
PY
then pass "bench elastic: kill and grow rows on tiny, 0 steps lost ($(grep -c '^{' "$T.el") rows)"
else fail "bench elastic: $(tail -5 "$T.el.err" "$T.el")"; fi
sleep 0.5
# (only what this run made: another bench elastic may be running on the machine)
left=$(comm -13 <(echo "$procs0") <(pgrep -f 'yk_bench_elastic_' | sort))
[ -z "$left" ] && [ "$(ls -d /tmp/yk_bench_elastic_* 2>/dev/null | wc -l)" -le "$tmp0" ] \
  && pass "bench elastic: no process and no temporary directory left" \
  || fail "bench elastic: left behind: $left $(ls -d /tmp/yk_bench_elastic_* 2>/dev/null)"
rm -f "$T.el" "$T.el.err"
finish
