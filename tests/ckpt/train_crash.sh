#!/usr/bin/env bash
# kill -9 of `yoke train` at random moments while it checkpoints every step
# (ckpt.every=1: the background writer is always compressing, fsyncing,
# committing or rotating), 21 times: after each kill the newest committed
# checkpoint verifies (`yoke ckpt verify`, every checksum) and a resume from
# it loads and trains on. Each run resumes the previous one, so the kills
# also land during the start-up read of a resume.
set -u
. "$(dirname "$0")/../lib.sh"
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill -9 $pid 2>/dev/null; rm -rf "$tmp"' EXIT
"$YOKE" data prepare --out "$tmp/data" /usr/share/common-licenses/* > /dev/null || { fail "data prepare"; finish; exit 1; }
cat > "$tmp/job.yaml" <<YAML
model: {name: small}
data: {train: "$tmp/data/train_*.bin"}
train: {micro_batch: 2, seq_len: 32, steps: 100000, threads: 1}
ckpt: {dir: "$tmp/ck", every: 1, keep: 2}
YAML
KILLS=${YK_CRASH_KILLS:-21}
bad=0 killed_saving=0 last=-1
for i in $(seq $KILLS); do
  # empty the log here: the child's own `2>` truncation may come after the
  # first poll below, which would then see the previous run's save lines
  : > "$tmp/run.log"
  "$YOKE" train "$tmp/job.yaml" --resume latest > /dev/null 2>> "$tmp/run.log" &
  pid=$!
  # wait (bounded) until this run's first save is under way, then kill it
  # 0-0.6 s later, so the kill lands in the save/commit/rotate cycle even on
  # a loaded machine where start-up alone takes a second
  for w in $(seq 800); do grep -q "ckpt: step" "$tmp/run.log" && break; kill -0 $pid 2>/dev/null || break; sleep 0.05; done
  if grep -q "ckpt: step" "$tmp/run.log"; then killed_saving=$((killed_saving + 1))
  else echo "kill $i: no save had started after $w polls ($(kill -0 $pid 2>/dev/null && echo running || echo "exited by itself")): $(tail -3 "$tmp/run.log" | tr '\n' ' ')"; fi
  sleep 0.$(( RANDOM % 60 ))
  kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null; pid=
  if ! grep -q "ERROR" "$tmp/run.log" && "$YOKE" ckpt verify "$tmp/ck" > "$tmp/v.log" 2>&1; then
    step=$("$YOKE" ckpt ls "$tmp/ck" | awk '/ latest / { print $1 }')
    [ -n "$step" ] && [ "$step" -ge "$last" ] || { bad=$((bad + 1)); echo "kill $i: newest step '$step' < previous $last"; }
    last=${step:-$last}
  elif [ "$last" = -1 ] && ! ls "$tmp/ck" 2>/dev/null | grep -q "^step-[0-9]*$"; then
    : # killed before the first commit ever (slow start on a loaded machine): nothing to verify yet
  else
    bad=$((bad + 1)); echo "kill $i: $(grep ERROR "$tmp/run.log" | head -2) $(tail -2 "$tmp/v.log")"
  fi
done
[ $bad = 0 ] && [ $killed_saving = $KILLS ] && pass "$KILLS kill -9 during saves (all after a save had started): newest checkpoint always verifies (reached step $last)" \
  || fail "$bad of $KILLS kills left a bad newest checkpoint; $killed_saving of them after a save had started"
[ "$last" -gt 10 ] && pass "training made progress across the kills (step $last)" || fail "only reached step $last"
# and the final state loads: resume and train 3 more steps to the end
"$YOKE" train "$tmp/job.yaml" --resume latest --set train.steps=$((last + 3)) > /dev/null 2> "$tmp/end.log" \
  && grep -q "resumed from .*step $last," "$tmp/end.log" && pass "resume from the last survivor (step $last) trains to the end" \
  || fail "final resume: $(grep -E 'ERROR|resumed' "$tmp/end.log" | head -2)"
finish
