#!/usr/bin/env bash
# `yoke plot` (common/plot.c, the one gnuplot helper): two training logs (a
# train.log_file and `yoke train --json` output) on one 2x2 figure, a PNG;
# a log without step lines is one error naming it; without gnuplot, one clear
# error. Skips (77) when gnuplot is not installed.
set -u
. "$(dirname "$0")/../lib.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# without gnuplot on PATH: one error naming the package (checked first: it
# needs no gnuplot)
printf '{"step": 1, "loss": 5.5, "lr": 0.0003, "tokens_per_s": 1000}\n' > "$tmp/one.jsonl"
PATH=/nonexistent "$YOKE" plot "$tmp/one.jsonl" --out "$tmp/x.png" > /dev/null 2> "$tmp/nognu.err"; rc=$?
[ $rc = 1 ] && [ "$(wc -l < "$tmp/nognu.err")" = 1 ] && grep -q "gnuplot is not installed: install it (Debian: apt-get install gnuplot-nox" "$tmp/nognu.err" \
  && pass "no gnuplot: one clear error" || fail "no gnuplot: exit $rc: $(cat "$tmp/nognu.err")"
command -v gnuplot > /dev/null || { echo "skip: gnuplot is not installed (scripts/install-deps.sh installs gnuplot-nox)"; finish; exit 77; }

"$YOKE" data prepare --out "$tmp/data" /usr/share/common-licenses/* > /dev/null || fail "data prepare"
cat > "$tmp/job.yaml" <<YAML
model: {name: tiny}
data: {train: "$tmp/data/train_*.bin", val: "$tmp/data/val_*.bin"}
train: {micro_batch: 2, seq_len: 32, steps: 8, threads: 1, val_every: 4, val_batches: 2}
YAML
"$YOKE" train "$tmp/job.yaml" --set train.log_file="$tmp/a.jsonl" > /dev/null 2>&1 || fail "run a"
"$YOKE" train "$tmp/job.yaml" --json --set optim.lr=1e-3 > "$tmp/b.json" 2> /dev/null || fail "run b"
expect_ok "plot two runs" "$YOKE" plot "$tmp/a.jsonl" "$tmp/b.json" --out "$tmp/p.png" --title "lr 3e-4 vs 1e-3"
[ "$(head -c 8 "$tmp/p.png" | od -An -tx1 | tr -d ' ')" = 89504e470d0a1a0a ] && pass "the figure is a PNG" || fail "not a PNG"
grep -q "multiplot layout 2,2" "$tmp/p.png.gp" && [ "$(grep -c "a.jsonl" "$tmp/p.png.gp")" = 4 ] && [ "$(grep -c "b.json'" "$tmp/p.png.gp")" = 4 ] \
  && pass "2x2 figure, both runs in all four panels" || fail "script: $(grep plot "$tmp/p.png.gp")"
n=$(sed -n '/^\$s0 << EOD/,/^EOD/p' "$tmp/p.png.gp" | grep -c '^[0-9]')
[ "$n" = 8 ] && pass "8 step rows of run a" || fail "run a rows: $n"
expect_fail 1 "a log with no step lines" "$YOKE" plot "$tmp/a.jsonl" "$tmp/job.yaml" --out "$tmp/q.png"
expect_stderr "$tmp/job.yaml has no JSON step lines" "$YOKE" plot "$tmp/a.jsonl" "$tmp/job.yaml" --out "$tmp/q.png"
expect_fail 2 "plot without --out" "$YOKE" plot "$tmp/a.jsonl"
expect_fail 2 "plot without a log" "$YOKE" plot --out "$tmp/q.png"
finish
