#!/usr/bin/env bash
# `yoke data prepare` end to end on a few small text files: token counts,
# exact shard contents (byte-level, separators, per-document val split),
# sorted and deduplicated inputs, determinism, multi-shard output, GPT-2 BPE
# shards from a small encoder.json + vocab.bpe, and the errors for bad usage
# and bad input.
set -u
. "$(dirname "$0")/../lib.sh"

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/in/sub"
printf 'The quick brown fox jumps over the lazy dog.\n' > "$tmp/in/b.txt"      # 45 bytes
printf 'Hello, world!\nSecond line here.\n' > "$tmp/in/a.txt"                 # 32 bytes
head -c 1000 /usr/share/common-licenses/GPL-3 > "$tmp/in/c.txt"              # 1000 bytes
ln -s b.txt "$tmp/in/link.txt"                                                # duplicate of b.txt

expect_ok "--help" "$YOKE" data prepare --help
expect_ok "data --help" "$YOKE" data --help
expect_fail 2 "no inputs" "$YOKE" data prepare
expect_fail 2 "unknown flag" "$YOKE" data prepare --frobnicate x
expect_stderr "unknown option '--frobnicate'" "$YOKE" data prepare --frobnicate x
expect_fail 2 "bad val fraction" "$YOKE" data prepare --val-fraction 1.5 "$tmp/in/a.txt"
expect_stderr "--val-fraction '1.5' must be a number in [0, 1)" "$YOKE" data prepare --val-fraction 1.5 "$tmp/in/a.txt"
expect_fail 2 "glob without match" "$YOKE" data prepare --out "$tmp/o" "$tmp/in/*.nope"
expect_stderr "no file matches" "$YOKE" data prepare --out "$tmp/o" "$tmp/in/*.nope"
expect_fail 2 "unknown action" "$YOKE" data frobnicate
expect_fail 2 "directory argument" "$YOKE" data prepare --out "$tmp/o" "$tmp/in/sub"
printf 'bin\0ary' > "$tmp/bin.dat"
expect_fail 1 "NUL byte file" "$YOKE" data prepare --out "$tmp/o" "$tmp/bin.dat"
expect_stderr "bin.dat has a NUL byte at offset 3" "$YOKE" data prepare --out "$tmp/o" "$tmp/bin.dat"
# input too small for one training window is refused, naming it, and writes nothing
: > "$tmp/empty.txt"
expect_fail 1 "empty file" "$YOKE" data prepare --out "$tmp/small" "$tmp/empty.txt"
expect_stderr "empty.txt is empty: there is no text to make shards of" "$YOKE" data prepare --out "$tmp/small" "$tmp/empty.txt"
expect_fail 1 "too small for a window" "$YOKE" data prepare --out "$tmp/small" "$tmp/in/a.txt"
expect_stderr "a.txt: 32 bytes give 30 train tokens, fewer than one training window of 257" "$YOKE" data prepare --out "$tmp/small" "$tmp/in/a.txt"
[ ! -e "$tmp/small/train_000.bin" ] && pass "no shard written for too little text" || fail "a shard was written: $(ls "$tmp/small")"
expect_ok "--min-tokens lowers the bar" "$YOKE" data prepare --out "$tmp/small" --min-tokens 30 "$tmp/in/a.txt"
# an empty file among others adds nothing (no lone separator)
out=$("$YOKE" data prepare --out "$tmp/small" --val-fraction 0 "$tmp/in/c.txt" "$tmp/empty.txt")
case "$out" in *"train: 1001 tokens"*) pass "empty file adds no tokens" ;; *) fail "empty file among others: $out" ;; esac

# val fraction 0.25: per document floor(len/4) bytes go to val, each part gets a separator token
out=$("$YOKE" data prepare --out "$tmp/o" --val-fraction 0.25 "$tmp/in/*.txt" 2>&1); rc=$?
[ $rc = 0 ] && pass "prepare ran" || fail "prepare exit $rc: $out"
echo "$out"
# a: 32 -> 24 + 8; b: 45 -> 34 + 11; c: 1000 -> 750 + 250; link.txt skipped
train=$(( (1 + 24) + (1 + 34) + (1 + 750) )); val=$(( (1 + 8) + (1 + 11) + (1 + 250) ))
case "$out" in *"read 3 files, 1077 bytes (1 duplicate path skipped)"*) pass "file count" ;; *) fail "file count: $out" ;; esac
case "$out" in *"train: $train tokens in 1 shard"*) pass "train count $train" ;; *) fail "train count: $out" ;; esac
case "$out" in *"val: $val tokens in 1 shard"*) pass "val count $val" ;; *) fail "val count: $out" ;; esac

# exact contents: sorted order a, b, c; token = byte; 0 before each document part
toks() { tail -c +1025 "$1" | od -An -tu2 -v | tr -s ' ' '\n' | grep -v '^$'; }
bytes() { od -An -tu1 -v | tr -s ' ' '\n' | grep -v '^$'; }
{ for f in a b c; do echo 0; n=$(stat -c %s "$tmp/in/$f.txt"); head -c $((n - n / 4)) "$tmp/in/$f.txt" | bytes; done; } > "$tmp/want_train"
{ for f in a b c; do echo 0; n=$(stat -c %s "$tmp/in/$f.txt"); tail -c $((n / 4)) "$tmp/in/$f.txt" | bytes; done; } > "$tmp/want_val"
toks "$tmp/o/train_000.bin" > "$tmp/got_train"
toks "$tmp/o/val_000.bin" > "$tmp/got_val"
cmp -s "$tmp/want_train" "$tmp/got_train" && pass "train tokens exact" || fail "train tokens differ: $(diff "$tmp/want_train" "$tmp/got_train" | head -5)"
cmp -s "$tmp/want_val" "$tmp/got_val" && pass "val tokens exact" || fail "val tokens differ"
hdr=$(head -c 12 "$tmp/o/train_000.bin" | od -An -td4 | tr -s ' ')
[ "$hdr" = " 20240520 1 $train" ] && pass "header magic/version/count" || fail "header: '$hdr'"
[ "$(stat -c %s "$tmp/o/train_000.bin")" = $((1024 + 2 * train)) ] && pass "file size" || fail "file size"

# deterministic: same inputs, byte-identical shards (argument order does not matter)
"$YOKE" data prepare --out "$tmp/o2" --val-fraction 0.25 "$tmp/in/c.txt" "$tmp/in/link.txt" "$tmp/in/a.txt" "$tmp/in/b.txt" > /dev/null
cmp -s "$tmp/o/train_000.bin" "$tmp/o2/train_000.bin" && cmp -s "$tmp/o/val_000.bin" "$tmp/o2/val_000.bin" \
  && pass "deterministic" || fail "shards differ between runs"

# several shards, and a rerun removes the earlier run's extra shards
out=$("$YOKE" data prepare --out "$tmp/o" --val-fraction 0 --shard-tokens 300 "$tmp/in/*.txt")
all=$(( 1 + 32 + 1 + 45 + 1 + 1000 ))
case "$out" in *"train: $all tokens in 4 shards"*) pass "multi-shard" ;; *) fail "multi-shard: $out" ;; esac
[ -e "$tmp/o/train_003.bin" ] && [ ! -e "$tmp/o/val_000.bin" ] && pass "shard files" || fail "shard files: $(ls "$tmp/o")"
cat "$tmp/o"/train_00[0-3].bin > /dev/null
sum=0; for f in "$tmp"/o/train_*.bin; do sum=$((sum + ($(stat -c %s "$f") - 1024) / 2)); done
[ $sum = $all ] && pass "shards sum to $all tokens" || fail "shards hold $sum tokens"
"$YOKE" data prepare --out "$tmp/o" "$tmp/in/c.txt" > /dev/null
[ ! -e "$tmp/o/train_001.bin" ] && pass "stale shards removed" || fail "stale shard left: $(ls "$tmp/o")"

# yoke data info: counts, preview, and bad shards named
"$YOKE" data prepare --out "$tmp/o" --val-fraction 0.25 "$tmp/in/*.txt" > /dev/null
out=$("$YOKE" data info --vocab 256 "$tmp/o/*.bin" 2>&1); rc=$?
[ $rc = 0 ] && pass "info ok" || fail "info exit $rc: $out"
case "$out" in *"train_000.bin: $train tokens, largest id "*'starts "\x00Hello, world!\nSecond'*) pass "info train line" ;; *) fail "info: $out" ;; esac
case "$out" in *"total: $((train + val)) tokens in 2 shards"*) pass "info total" ;; *) fail "info total: $out" ;; esac
expect_fail 1 "info: vocab too small" "$YOKE" data info --vocab 100 "$tmp/o/train_000.bin"
cp "$tmp/o/train_000.bin" "$tmp/cut.bin"; truncate -s -3 "$tmp/cut.bin"
expect_fail 1 "info: truncated shard" "$YOKE" data info "$tmp/cut.bin"
expect_stderr "cut.bin: file size" "$YOKE" data info "$tmp/cut.bin"
expect_fail 2 "info: no args" "$YOKE" data info
expect_fail 2 "info: bad flag" "$YOKE" data info --bogus
expect_ok "info --help" "$YOKE" data info --help

# GPT-2 BPE: a vocabulary of the 256 byte symbols (ids 0..255 in byte
# order), merges "Ġ t" -> 256, "h e" -> 257, "Ġt he" -> 258, and
# <|endoftext|> 259; documents start with 259 and merges apply
python3 - "$tmp" <<'PY'
import json, sys
bs = list(range(ord('!'), ord('~') + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
cs = bs[:]
n = 0
for b in range(256):
    if b not in bs:
        bs.append(b); cs.append(256 + n); n += 1
enc = {chr(c): b for b, c in zip(bs, cs)}
enc.update({'\u0120t': 256, 'he': 257, '\u0120the': 258, '<|endoftext|>': 259})
json.dump(enc, open(sys.argv[1] + '/encoder.json', 'w'))
open(sys.argv[1] + '/vocab.bpe', 'w', encoding='utf-8').write('#version: 0.2\n\u0120 t\nh e\n\u0120t he\n')
PY
printf 'the cat sat on the mat' > "$tmp/bpe.txt"
gpt2=(--tokenizer gpt2 --encoder "$tmp/encoder.json" --bpe "$tmp/vocab.bpe")
out=$("$YOKE" data prepare --out "$tmp/g" --val-fraction 0 --min-tokens 1 "${gpt2[@]}" "$tmp/bpe.txt" 2>&1)
case "$out" in *"vocabulary: 260 (GPT-2 BPE)"*) pass "gpt2 prepare: $(echo "$out" | grep train:)" ;; *) fail "gpt2 prepare: $out" ;; esac
got=$(python3 -c "import struct,sys; d=open(sys.argv[1],'rb').read()[1024:]; print(*struct.unpack('<%dH' % (len(d)//2), d))" "$tmp/g/train_000.bin")
# 259 | t he | Ġ c a t | Ġ s a t | Ġ o n | Ġthe | Ġ m a t
want="259 116 257 32 99 97 116 32 115 97 116 32 111 110 258 32 109 97 116"
[ "$got" = "$want" ] && pass "gpt2 shard tokens: $got" || fail "gpt2 shard tokens: '$got', want '$want'"
expect_fail 2 "gpt2 without --bpe" "$YOKE" data prepare --out "$tmp/g" --tokenizer gpt2 --encoder "$tmp/encoder.json" "$tmp/bpe.txt"
expect_stderr "goes with both --encoder encoder.json and --bpe vocab.bpe" "$YOKE" data prepare --out "$tmp/g" --tokenizer gpt2 "$tmp/bpe.txt"
expect_fail 1 "gpt2 with a missing vocab.bpe" "$YOKE" data prepare --out "$tmp/g" --tokenizer gpt2 --encoder "$tmp/encoder.json" --bpe "$tmp/nope.bpe" "$tmp/bpe.txt"
expect_stderr "nope.bpe" "$YOKE" data prepare --out "$tmp/g" --tokenizer gpt2 --encoder "$tmp/encoder.json" --bpe "$tmp/nope.bpe" "$tmp/bpe.txt"

# the quick-start corpus every Debian machine has
out=$("$YOKE" data prepare --out "$tmp/lic" '/usr/share/common-licenses/*')
case "$out" in *"train: "*" tokens in 1 shard"*) pass "common-licenses corpus" ;; *) fail "corpus: $out" ;; esac
finish
