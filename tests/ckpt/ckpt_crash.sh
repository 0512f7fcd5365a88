#!/bin/bash
# kill -9 during checkpoint saves at >= 20 random moments: after every kill
# the newest committed checkpoint must verify (library and `yoke ckpt
# verify`) and load with exactly the state of its step, and committed
# progress must never go backwards.
source "$YK_SOURCE_DIR/tests/lib.sh"
DRIVER=${CKPT_DRIVER:?}
T=$(mktemp -d /tmp/yk_ckpt_crash.XXXXXX)
trap 'rm -rf "$T"' EXIT
DIR=$T/ckpt
KILLS=${CKPT_KILLS:-24}
prev=0
bad=0
for i in $(seq 1 "$KILLS"); do
  mode=--mixed
  "$DRIVER" save "$DIR" $mode > "$T/save.log" 2>&1 &
  pid=$!
  # 20..700 ms: lands in every phase (fill, compress, fsync, commit, rotation)
  sleep "0.$(printf '%03d' $((RANDOM % 680 + 20)))"
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  out=$("$DRIVER" check "$DIR" 2>&1); rc=$?
  if [ $rc = 3 ] && [ $prev = 0 ]; then
    echo "kill $i: no checkpoint committed yet"
    continue
  fi
  if [ $rc != 0 ]; then
    fail "kill $i: newest committed checkpoint does not load: $out"
    bad=1
    continue
  fi
  step=$(echo "$out" | awk '{print $3}')
  if [ "$step" -lt "$prev" ]; then fail "kill $i: newest committed step went back from $prev to $step"; bad=1; fi
  prev=$step
  if ! "$YOKE" ckpt verify "$DIR" > "$T/verify.log" 2>&1; then
    fail "kill $i: yoke ckpt verify: $(cat "$T/verify.log")"; bad=1
  fi
  echo "kill $i: $out"
done
[ $bad = 0 ] && pass "$KILLS kill -9 moments: newest committed checkpoint always verified and loaded"
[ "$prev" -gt 2 ] && pass "saves made progress across kills (newest step $prev)" || fail "no progress: newest step $prev"
# the driver finishes cleanly when not killed, and keep=2 holds
"$DRIVER" save "$DIR" --steps 3 --async > "$T/save.log" 2>&1 && pass "clean async saves" || fail "clean saves: $(cat "$T/save.log")"
n=$("$YOKE" ckpt ls "$DIR" | grep -c -E 'committed|latest')
[ "$n" = 2 ] && pass "keep=2 leaves 2 committed checkpoints" || fail "keep=2 left $n: $("$YOKE" ckpt ls "$DIR")"
expect_ok "check after clean saves" "$DRIVER" check "$DIR"

# real processes: 3 ranks write their shards concurrently, rank 0 commits
P=$T/procs
for step in 1 2 3; do
  pids=()
  for r in 0 1 2; do "$DRIVER" shard "$P" --rank $r --world 3 --step $step & pids+=($!); done
  ok=1
  for p in "${pids[@]}"; do wait "$p" || ok=0; done
  [ $ok = 1 ] && "$DRIVER" commit "$P" --world 3 --step $step || ok=0
  [ $ok = 1 ] && pass "3 concurrent rank processes saved step $step" || fail "concurrent save of step $step"
done
out=$("$DRIVER" check "$P" 2>&1)
[ "$out" = "ok step 3 world 3" ] && pass "concurrent save loads: $out" || fail "concurrent save: $out"
finish
