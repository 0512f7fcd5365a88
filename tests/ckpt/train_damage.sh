#!/usr/bin/env bash
# Damaged newest checkpoint on `yoke train --resume latest`:
#  - a flipped byte at random places of the shard, a flipped byte in the
#    manifest, a truncated shard and a missing shard (of a 2-shard
#    checkpoint) are each refused with a message naming the file (and the
#    tensor, for tensor data), pointing at ckpt.fallback;
#  - with ckpt.fallback=true the run resumes from the previous checkpoint
#    (logged) and trains to the end; the damaged step is then written anew;
#  - fallback never skips a checkpoint that is fine, and never silently
#    starts from scratch.
set -u
. "$(dirname "$0")/../lib.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$YOKE" data prepare --out "$tmp/data" /usr/share/common-licenses/* > /dev/null || { fail "data prepare"; finish; exit 1; }
cat > "$tmp/job.yaml" <<YAML
model: {name: tiny}
data: {train: "$tmp/data/train_*.bin"}
train: {micro_batch: 4, seq_len: 32, steps: 6, threads: 1}
ckpt: {every: 2, keep: 5}
YAML
"$YOKE" train "$tmp/job.yaml" --set ckpt.dir="$tmp/good" 2> "$tmp/good.log" && [ -d "$tmp/good/step-00000006" ] \
  && pass "checkpoints 2, 4, 6 written" || { fail "setup run: $(tail -3 "$tmp/good.log")"; finish; exit 1; }
shard=step-00000006/shard-00000-of-00001.yks
size=$(stat -c %s "$tmp/good/$shard")

damaged() { # damaged WHAT NEEDLE CMD...: resume refused naming NEEDLE; fallback resumes from step 4
  local what=$1 needle=$2; shift 2
  rm -rf "$tmp/d"; cp -r "$tmp/good" "$tmp/d"
  "$@"
  "$YOKE" train "$tmp/job.yaml" --set ckpt.dir="$tmp/d" --resume latest --steps 8 > /dev/null 2> "$tmp/e.log"; local rc=$?
  if [ $rc != 0 ] && grep ERROR "$tmp/e.log" | grep -qF -- "$needle" && grep ERROR "$tmp/e.log" | grep -q "ckpt.fallback=true" \
     && ! grep -q "resumed from" "$tmp/e.log"; then
    pass "$what: refused (exit $rc) naming '$needle'"
  else fail "$what: exit $rc: $(grep ERROR "$tmp/e.log" | head -2)"; fi
  "$YOKE" train "$tmp/job.yaml" --set ckpt.dir="$tmp/d" --resume latest --steps 8 --set ckpt.fallback=true > /dev/null 2> "$tmp/f.log"
  rc=$?
  if [ $rc = 0 ] && grep -q "resumed from $tmp/d/step-00000004 (step 4" "$tmp/f.log" && grep -q "ckpt.fallback: resumed from the older" "$tmp/f.log"; then
    pass "$what: ckpt.fallback resumes from step 4 and finishes"
  else fail "$what: fallback exit $rc: $(grep -E 'ERROR|resumed' "$tmp/f.log" | head -3)"; fi
}
# XOR the byte with 0x5a (writing 0x5a itself was a no-op where the byte already was 0x5a: 1 in 256)
flip() { python3 -c 'import sys; p, o = sys.argv[1], int(sys.argv[2]); f = open(p, "r+b"); f.seek(o); c = f.read(1); f.seek(o); f.write(bytes([c[0] ^ 0x5a]))' "$1" "$2"; }

# byte flips at random offsets over the whole shard file (header, chunks, blobs, index, trailer)
for i in 1 2 3 4 5 6; do
  off=$(( (RANDOM * 32768 + RANDOM) % size ))
  damaged "flipped byte at offset $off of the shard" "$tmp/d/$shard" flip "$tmp/d/$shard" $off
done
# a flip inside tensor data names the tensor
damaged "flipped byte in tensor data" "checksum mismatch in tensor 'wte'" flip "$tmp/d/$shard" 3000
damaged "flipped byte in the manifest" "$tmp/d/step-00000006/manifest.json" flip "$tmp/d/step-00000006/manifest.json" 150
damaged "truncated shard" "$tmp/d/$shard is $((size - 1000)) bytes" truncate -s -1000 "$tmp/d/$shard"
damaged "missing manifest" "step-00000006" rm "$tmp/d/step-00000006/manifest.json"

# a 2-shard newest checkpoint with shard 1 missing (resumed by 1 rank)
"$YOKE" ckpt convert "$tmp/good/step-00000006" --world 2 --out "$tmp/two" > /dev/null 2>&1
cp -r "$tmp/good/step-00000004" "$tmp/two/"
rm -rf "$tmp/good" && mv "$tmp/two" "$tmp/good"
damaged "missing shard of 2" "step-00000006/shard-00001-of-00002.yks is missing" rm "$tmp/d/step-00000006/shard-00001-of-00002.yks"

# the resumed run wrote step 6 anew, committed over the damaged one
"$YOKE" ckpt verify "$tmp/d" > /dev/null 2>&1 && "$YOKE" ckpt ls "$tmp/d" | grep -q "^8 .*latest" \
  && pass "after the fallback run the newest checkpoint (step 8) verifies" || fail "ckpt after fallback: $("$YOKE" ckpt ls "$tmp/d")"

# only damaged checkpoint and fallback: no older one -> error, never a fresh start
rm -rf "$tmp/one"; mkdir "$tmp/one"; cp -r "$tmp/d/step-00000008" "$tmp/one/"
flip "$tmp/one/step-00000008/manifest.json" 100
"$YOKE" train "$tmp/job.yaml" --set ckpt.dir="$tmp/one" --resume latest --steps 10 --set ckpt.fallback=true > /dev/null 2> "$tmp/o.log"
[ $? != 0 ] && grep -q "no older checkpoint could be loaded" "$tmp/o.log" && pass "only checkpoint damaged + fallback: error, no fresh start" \
  || fail "single damaged: $(grep -E 'ERROR|resumed|no checkpoint' "$tmp/o.log" | head -2)"
# --resume latest with an empty dir starts at 0 (first run of a requeued job)
"$YOKE" train "$tmp/job.yaml" --set ckpt.dir="$tmp/empty" --resume latest --steps 2 > /dev/null 2> "$tmp/z.log" \
  && grep -q "no checkpoint in $tmp/empty yet: starting from step 0" "$tmp/z.log" && pass "--resume latest, no checkpoint yet: starts at 0" \
  || fail "empty resume: $(tail -2 "$tmp/z.log")"
"$YOKE" train "$tmp/job.yaml" --set ckpt.dir="$tmp/empty2" --resume "$tmp/nonexistent" --steps 2 > /dev/null 2> "$tmp/z2.log"
[ $? != 0 ] && grep -q "nonexistent" "$tmp/z2.log" && pass "--resume PATH that does not exist: error" || fail "bad path: $(tail -1 "$tmp/z2.log")"
# resuming at another global batch: one WARN with both batches and the grad_accum that keeps it
# ($tmp/good now holds the 2-rank checkpoints: 2 -> 1 rank)
rm -rf "$tmp/gb"; cp -r "$tmp/good" "$tmp/gb"
"$YOKE" train "$tmp/job.yaml" --set ckpt.dir="$tmp/gb" --resume latest --steps 7 --set train.grad_accum=3 > /dev/null 2> "$tmp/gb.log"
[ "$(grep -c 'WARN.*global batch changes' "$tmp/gb.log")" = 1 ] && grep -qF "global batch changes from 8 (micro_batch 4 x grad_accum 1 x 2 ranks, in the checkpoint) to 12 (4 x 3 x 1 rank)" "$tmp/gb.log" \
  && grep -q "set train.grad_accum=2 to keep it" "$tmp/gb.log" && pass "another global batch on resume: one WARN naming both" \
  || fail "global batch WARN: $(grep -E 'WARN|ERROR' "$tmp/gb.log" | head -3)"
rm -rf "$tmp/gb"; cp -r "$tmp/good" "$tmp/gb"
"$YOKE" train "$tmp/job.yaml" --set ckpt.dir="$tmp/gb" --resume latest --steps 7 --set train.grad_accum=2 > /dev/null 2> "$tmp/gb.log"
! grep -q "global batch changes" "$tmp/gb.log" && pass "same global batch (grad_accum 2 on 1 rank): no WARN" || fail "WARN at the same batch: $(grep -E 'WARN|ERROR|global batch' "$tmp/gb.log" | head -3)"

# a bad ckpt.dir is found at start, in one line naming it, before step 1
baddir() { # baddir WHAT DIR NEEDLE
  "$YOKE" train "$tmp/job.yaml" --set ckpt.dir="$2" --steps 2 > /dev/null 2> "$tmp/b.log"; local rc=$?
  if [ $rc = 2 ] && [ "$(grep -c ERROR "$tmp/b.log")" = 1 ] && grep ERROR "$tmp/b.log" | grep -qF -- "$3" \
     && ! grep -q "step 1/" "$tmp/b.log"; then pass "$1: refused at start (exit 2) naming '$3'"
  else fail "$1: exit $rc: $(grep -E 'ERROR|step 1/' "$tmp/b.log" | head -3)"; fi
}
: > "$tmp/plainfile"
baddir "ckpt.dir is a regular file" "$tmp/plainfile" "ckpt.dir=$tmp/plainfile is not a directory"
baddir "ckpt.dir under a regular file" "$tmp/plainfile/ck" "ckpt.dir=$tmp/plainfile/ck cannot be created"
if [ "$(id -u)" != 0 ]; then
  mkdir -p "$tmp/ro" && chmod 555 "$tmp/ro"
  baddir "ckpt.dir read-only" "$tmp/ro" "ckpt.dir=$tmp/ro is not writable"
else # root writes through permission bits; /proc refuses new files even to root
  baddir "ckpt.dir not writable" /proc "ckpt.dir=/proc is not writable"
fi
[ -z "$(find "$tmp/good" "$tmp/empty" -name '.yk-write-probe*')" ] && pass "the start-up write probe leaves no file" \
  || fail "probe files left: $(find "$tmp" -name '.yk-write-probe*')"
finish
