#!/usr/bin/env bash
# optim.offload=disk (docs/memory.md): the master weights (mixed precision)
# and AdamW m, v of a rank's slice live in a file and are streamed through
# the update in chunks. Checked here:
#  - an offloaded run equals the in-memory run bit for bit (every step's loss
#    and gradient norm, the params checksum), fp32 and bf16, over many chunks
#    (offload_chunk_kb=16: the read-ahead and write-behind sets all cycle),
#    and on 2 ranks with ZeRO-1 in bf16;
#  - yoke plan drops the offloaded state and counts the staging;
#  - a full disk (a 1 MiB tmpfs, when this user may mount) and a directory
#    that cannot be written give one clear error at start naming the
#    directory, the bytes needed and what to do; no file is left behind;
#  - checkpoints under offload: a run stopped at step 4 and resumed with
#    offload continues bitwise like an uninterrupted in-memory run (fp32,
#    bf16, bf16 on 2 ranks with ZeRO-1); an offloaded run's checkpoint
#    resumes without offload and an in-memory one with offload, bitwise; a
#    full offload disk at resume is one clear error and the checkpoint stays
#    intact (yoke ckpt verify).
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/lib-train.sh"
mkdir -p "$tmp/od"
base=(--set data.train="$tmp/data/train_*.bin" --set model.name=tiny --set train.micro_batch=4 --set train.seq_len=64
      --steps 5 --json --set optim.offload_dir="$tmp/od" --set optim.offload_chunk_kb=16)
steps() { grep '"step"' "$1" | sed 's/.*"step": \([0-9]*\), "loss": \([^,]*\).*"grad_norm": \([^,]*\).*/\1 \2 \3/' | sort; }
sum() { grep -o '"params_checksum": "[0-9a-f]*"' "$1" | sort -u | tr "\n" " "; }
same() { # same NAME A B
  if [ -n "$(sum "$2")" ] && [ "$(sum "$2")" = "$(sum "$3")" ] && [ "$(steps "$2")" = "$(steps "$3")" ] &&
     [ "$(steps "$2" | wc -l)" -ge 5 ]; then pass "$1: offloaded run bitwise equal to in memory ($(sum "$2"))"
  else fail "$1: $(sum "$2") vs $(sum "$3"); steps: $(steps "$2" | tr '\n' ' ') vs $(steps "$3" | tr '\n' ' ')"; fi
}
for p in fp32 bf16; do
  "$YOKE" train "${base[@]}" --set train.precision=$p > "$tmp/mem$p.json" 2> "$tmp/mem$p.log"
  "$YOKE" train "${base[@]}" --set train.precision=$p --set optim.offload=disk > "$tmp/disk$p.json" 2> "$tmp/disk$p.log"
  same "$p 1 rank" "$tmp/disk$p.json" "$tmp/mem$p.json"
done
grep -q "optimizer state on disk: .*chunks" "$tmp/diskbf16.log" && pass "the log names the offload file and its chunks" ||
  fail "no offload line in the log: $(tail -2 "$tmp/diskbf16.log")"
[ -z "$(ls -A "$tmp/od")" ] && pass "the offload file is removed at the end (scratch)" || fail "left in offload_dir: $(ls "$tmp/od")"
for o in none disk; do
  "$YOKE" launch -n 2 -- train "${base[@]}" --set train.precision=bf16 --set optim.zero=1 --set optim.offload=$o \
    --set coord.port=$YK_PORT > "$tmp/z1$o.json" 2> "$tmp/z1$o.log"
done
same "bf16 2 ranks ZeRO-1" "$tmp/z1disk.json" "$tmp/z1none.json"

# yoke plan: no moments in memory, the staging counted
"$YOKE" plan --set model.name=d12 --set train.precision=bf16 --set optim.offload=disk --json > "$tmp/plan.json"
if python3 - "$tmp/plan.json" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).readline())
assert r["moments_bytes"] == 0 and r["master_bytes"] == 0, r
# three sets of 4 MiB of master, m and v, plus a 16-bit chunk
assert r["offload_staging_bytes"] >= 3 * 3 * 4 * 2**20, r
PY
then pass "yoke plan: offloaded state dropped, staging counted"; else fail "yoke plan --json: $(head -c 300 "$tmp/plan.json")"; fi

# A full disk: one clear error at start.
expect_err() { # NAME DIR PATTERN
  "$YOKE" train "${base[@]}" --set model.name=small --set optim.offload=disk --set optim.offload_dir="$2" \
    > /dev/null 2> "$tmp/err.log"
  local rc=$? n
  n=$(grep -c ERROR "$tmp/err.log")
  if [ "$rc" != 0 ] && [ "$n" = 1 ] && grep -q "optim.offload_dir=$2.*$3" "$tmp/err.log" &&
     ! grep -q "step 0" "$tmp/err.log"; then pass "$1: $(grep ERROR "$tmp/err.log" | cut -c1-160)"
  else fail "$1: exit $rc, $n error lines: $(tail -2 "$tmp/err.log")"; fi
}
if mkdir -p "$tmp/full" && mount -t tmpfs -o size=1m tmpfs "$tmp/full" 2> /dev/null; then
  expect_err "full 1 MiB tmpfs" "$tmp/full" "MiB free but rank 0's offload file needs"
  [ -z "$(ls -A "$tmp/full")" ] && pass "nothing half-written on the full disk" || fail "left on the full disk: $(ls "$tmp/full")"
  umount "$tmp/full"
  mount -t tmpfs -o ro,size=1m tmpfs "$tmp/full" 2> /dev/null &&
    { expect_err "read-only directory" "$tmp/full" "not writable"; umount "$tmp/full"; }
else
  skip "full tmpfs: this user cannot mount"
fi
expect_err "missing directory" "$tmp/nope" "is not a directory"

# Checkpoints under offload: 8 steps, a checkpoint every 2, stopped after 4.
ck=(--set data.train="$tmp/data/train_*.bin" --set model.name=tiny --set train.micro_batch=4 --set train.seq_len=64
    --steps 8 --json --set optim.offload_dir="$tmp/od" --set optim.offload_chunk_kb=16 --set ckpt.every=2)
later() { # later NAME RESUMED REFERENCE: steps 5..8 and the checksum of RESUMED equal REFERENCE's
  local a b
  a=$(steps "$2" | awk '$1 > 4'); b=$(steps "$3" | awk '$1 > 4')
  if [ -n "$(sum "$2")" ] && [ "$(sum "$2")" = "$(sum "$3")" ] && [ "$a" = "$b" ] && [ "$(echo "$a" | wc -l)" = 4 ]
  then pass "$1: steps 5-8 bitwise equal to the uninterrupted in-memory run ($(sum "$2"))"
  else fail "$1: $(sum "$2") vs $(sum "$3"); steps: $(echo $a) vs $(echo $b); $(grep -h ERROR "${2%.json}.log" | head -2)"; fi
}
run() { # run NAME EXPECTED_EXIT [launch -n 2 --] args...: JSON in $tmp/NAME.json, log in $tmp/NAME.log
  local name=$1 want=$2 rc; shift 2
  if [ "$1" = 2 ]; then shift; "$YOKE" launch -n 2 -- train "${ck[@]}" --set coord.port=$YK_PORT "$@" > "$tmp/$name.json" 2> "$tmp/$name.log"
  else "$YOKE" train "${ck[@]}" "$@" > "$tmp/$name.json" 2> "$tmp/$name.log"; fi
  rc=$?
  [ "$rc" = "$want" ] || fail "$name: exit $rc, wanted $want: $(grep -h ERROR "$tmp/$name.log" | head -2)"
}
for p in fp32 bf16; do
  P=(--set train.precision=$p)
  run ref$p 0 "${P[@]}"
  run offa$p 75 "${P[@]}" --set optim.offload=disk --set ckpt.dir="$tmp/ckd$p" --set train.stop_after=4
  run offb$p 0 "${P[@]}" --set optim.offload=disk --set ckpt.dir="$tmp/ckd$p" --resume latest
  later "$p offload: save, stop, resume with offload" "$tmp/offb$p.json" "$tmp/ref$p.json"
  grep -q "rebuilt the offload file" "$tmp/offb$p.log" || fail "$p: no 'rebuilt the offload file' in the resume's log"
  run offc$p 0 "${P[@]}" --set ckpt.dir="$tmp/ckx$p" --set ckpt.resume="$tmp/ckd$p/step-00000004"
  later "$p offload checkpoint resumed in memory" "$tmp/offc$p.json" "$tmp/ref$p.json"
  run mema$p 75 "${P[@]}" --set ckpt.dir="$tmp/ckm$p" --set train.stop_after=4
  run memb$p 0 "${P[@]}" --set optim.offload=disk --set ckpt.dir="$tmp/cky$p" --set ckpt.resume="$tmp/ckm$p/step-00000004"
  later "$p in-memory checkpoint resumed with offload" "$tmp/memb$p.json" "$tmp/ref$p.json"
done
Z=(--set train.precision=bf16 --set optim.zero=1)
run refz 0 2 "${Z[@]}"
run offaz 75 2 "${Z[@]}" --set optim.offload=disk --set ckpt.dir="$tmp/ckz" --set train.stop_after=4
run offbz 0 2 "${Z[@]}" --set optim.offload=disk --set ckpt.dir="$tmp/ckz" --resume latest
later "bf16 2 ranks ZeRO-1 offload: save, stop, resume" "$tmp/offbz.json" "$tmp/refz.json"
[ -z "$(ls -A "$tmp/od")" ] && pass "no offload file left after the checkpointed runs" || fail "left in offload_dir: $(ls "$tmp/od")"

# A full offload disk at resume: one clear error, the checkpoint intact.
if mount -t tmpfs -o size=1m tmpfs "$tmp/full" 2> /dev/null; then
  run full 2 --set train.precision=bf16 --set optim.offload=disk --set optim.offload_dir="$tmp/full" \
    --set ckpt.dir="$tmp/ckdbf16" --set ckpt.resume="$tmp/ckdbf16/step-00000004"
  n=$(grep -c ERROR "$tmp/full.log")
  if [ "$n" = 1 ] && grep -q "optim.offload_dir=$tmp/full has .* MiB free but rank 0's offload file needs" "$tmp/full.log" &&
     ! grep -q '"step"' "$tmp/full.json"; then pass "full offload disk at resume: $(grep ERROR "$tmp/full.log" | cut -c1-150)"
  else fail "full offload disk at resume: $n error lines: $(tail -2 "$tmp/full.log")"; fi
  "$YOKE" ckpt verify "$tmp/ckdbf16/step-00000004" > "$tmp/verify.log" 2>&1 &&
    pass "the checkpoint stays intact (yoke ckpt verify)" || fail "ckpt verify: $(tail -2 "$tmp/verify.log")"
  umount "$tmp/full"
else
  skip "full offload disk at resume: this user cannot mount"
fi
finish
