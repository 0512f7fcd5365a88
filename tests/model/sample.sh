#!/usr/bin/env bash
# yoke sample end to end with the real binary, on a tiny byte-level model
# trained here for a few steps on the quick-start corpus:
#  - the sample is made only of bytes the corpus holds (an untrained model's
#    sample is not: the check can fail);
#  - a fixed seed gives the same text twice, another seed other text;
#    temperature 0 and --top-k 1 agree;
#  - --ckpt DIR samples the same text as the weights file saved at that step;
#  - past max_seq_len the context window slides;
#  - bad input is one line naming the value: --tokens 0, a missing or corrupt
#    tokenizer file, a prompt with tokens outside the model's vocabulary.
set -u
. "$(dirname "$0")/../lib.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=1
command -v python3 > /dev/null || skip "python3 is needed to check the sample's bytes"

"$YOKE" data prepare --out "$tmp/data" /usr/share/common-licenses/* > /dev/null || { fail "data prepare"; finish; exit 1; }
job="$tmp/job.yaml"
cat > "$job" <<YAML
model:
  name: tiny
data:
  train: $tmp/data/train_*.bin
  val: $tmp/data/val_*.bin
train:
  micro_batch: 8
  seq_len: 64
  steps: 150
  val_every: 0
  val_batches: 2
  threads: 1
ckpt:
  dir: $tmp/ckpt
  every: 150
optim:
  lr: 3e-3
  warmup_steps: 10
YAML
"$YOKE" train "$job" --save-weights "$tmp/w.bin" > /dev/null 2> "$tmp/train.log" \
  || { fail "train: $(tail -3 "$tmp/train.log")"; finish; exit 1; }
"$YOKE" train "$job" --set train.steps=1 --set ckpt.dir= --save-weights "$tmp/w0.bin" > /dev/null 2>&1 \
  || { fail "train 1 step"; finish; exit 1; }

S=("$YOKE" sample --threads 1)
# only_corpus FILE: every byte of FILE after the prompt (and before the final
# newline) occurs in the corpus; prints the bytes that do not
only_corpus() {
  python3 - "$1" /usr/share/common-licenses/* <<'PY'
import sys
out = open(sys.argv[1], 'rb').read()
assert out.startswith(b'The ') and out.endswith(b'\n'), out[:20]
corpus = set()
for p in sys.argv[2:]:
    try: corpus |= set(open(p, 'rb').read())
    except IsADirectoryError: pass
bad = sorted(set(out[4:-1]) - corpus)
print(' '.join('%#04x' % b for b in bad))
sys.exit(1 if bad else 0)
PY
}

# 1. the trained model's sample is made of corpus bytes (top-k 20, seed 7)
"${S[@]}" --weights "$tmp/w.bin" --prompt "The " --tokens 300 --top-k 20 --seed 7 > "$tmp/s1" 2> "$tmp/s1.err"
rc=$?
[ $rc = 0 ] && grep -q "^sampled 300 tokens after a 4-token prompt" "$tmp/s1.err" && pass "sample of 300 tokens" \
  || fail "sample exit $rc: $(cat "$tmp/s1.err")"
[ "$(wc -c < "$tmp/s1")" = $((4 + 300 + 1)) ] && pass "prompt + 300 bytes + newline" || fail "sample is $(wc -c < "$tmp/s1") bytes"
bad=$(only_corpus "$tmp/s1") && pass "the sample has only corpus bytes: $(head -c 60 "$tmp/s1" | tr '\n' ' ')" \
  || fail "bytes outside the corpus: $bad"
# the same check rejects a model trained for 1 step (near uniform over 256 bytes)
"${S[@]}" --weights "$tmp/w0.bin" --prompt "The " --tokens 300 --top-k 20 --seed 7 > "$tmp/s0" 2> /dev/null
bad=$(only_corpus "$tmp/s0") && fail "an untrained model's sample passed the corpus check" \
  || pass "an untrained model's sample fails the corpus check ($bad)"

# 2. determinism
"${S[@]}" --weights "$tmp/w.bin" --prompt "The " --tokens 300 --top-k 20 --seed 7 > "$tmp/s2" 2> /dev/null
cmp -s "$tmp/s1" "$tmp/s2" && pass "same seed, same text" || fail "seed 7 gave two different texts"
"${S[@]}" --weights "$tmp/w.bin" --prompt "The " --tokens 300 --top-k 20 --seed 8 > "$tmp/s3" 2> /dev/null
cmp -s "$tmp/s1" "$tmp/s3" && fail "seeds 7 and 8 gave the same text" || pass "another seed, other text"
"${S[@]}" --weights "$tmp/w.bin" --prompt "The " --tokens 100 --temperature 0 --seed 1 > "$tmp/g1" 2> /dev/null
"${S[@]}" --weights "$tmp/w.bin" --prompt "The " --tokens 100 --top-k 1 --seed 2 > "$tmp/g2" 2> /dev/null
cmp -s "$tmp/g1" "$tmp/g2" && pass "temperature 0 = top-k 1 (greedy)" || fail "greedy runs differ"

# 3. from the checkpoint: the same text as from the weights saved at that step
"${S[@]}" --ckpt "$tmp/ckpt" --prompt "The " --tokens 300 --top-k 20 --seed 7 > "$tmp/c1" 2> "$tmp/c1.err"
cmp -s "$tmp/s1" "$tmp/c1" && pass "--ckpt samples what --weights does" || fail "--ckpt differs: $(cat "$tmp/c1.err")"

# 4. past max_seq_len (256 for tiny): 4 + 599 positions fed, the window
# rebuilt from its last 128 tokens 3 times
"${S[@]}" --weights "$tmp/w.bin" --prompt "The " --tokens 600 --top-k 20 --seed 7 > "$tmp/long" 2> "$tmp/long.err"
grep -q "sampled 600 tokens.*context window slid 3 times" "$tmp/long.err" && pass "600 tokens: the window slid 3 times" \
  || fail "long sample: $(cat "$tmp/long.err")"

# 5. errors: one line each, naming the value
one_line_err() { # WHAT WANT_EXIT NEEDLE CMD...
  local what=$1 want=$2 needle=$3; shift 3
  "$@" > /dev/null 2> "$tmp/err"; local rc=$?
  if [ $rc = "$want" ] && [ "$(wc -l < "$tmp/err")" = 1 ] && grep -qF -- "$needle" "$tmp/err"; then pass "$what: $(cat "$tmp/err")"
  else fail "$what: exit $rc (want $want), stderr: $(cat "$tmp/err")"; fi
}
one_line_err "--tokens 0" 2 "--tokens 0" "${S[@]}" --weights "$tmp/w.bin" --prompt "a" --tokens 0
one_line_err "--tokens -3" 2 "--tokens -3" "${S[@]}" --weights "$tmp/w.bin" --prompt "a" --tokens -3
one_line_err "missing tokenizer file" 1 "$tmp/nope.bin': No such file or directory; give the path of llm.c's gpt2_tokenizer.bin" "${S[@]}" --weights "$tmp/w.bin" --tokenizer gpt2 \
  --tokenizer-file "$tmp/nope.bin" --tokens 5
head -c 2000 /dev/zero > "$tmp/zero.bin"
one_line_err "corrupt tokenizer file" 1 "magic 0, expected 20240328" "${S[@]}" --weights "$tmp/w.bin" --tokenizer gpt2 \
  --tokenizer-file "$tmp/zero.bin" --tokens 5
# a GPT-2 vocabulary of the 256 byte symbols, a merge "h e" -> 256 and
# <|endoftext|> 257, as encoder.json + vocab.bpe and as tokenizer.bin:
# "hello" then holds token 256, outside the tiny model's vocabulary
python3 - "$tmp" <<'PY'
import json, sys
bs = list(range(ord('!'), ord('~') + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
cs = bs[:]
n = 0
for b in range(256):
    if b not in bs:
        bs.append(b); cs.append(256 + n); n += 1
enc = {chr(c): b for b, c in zip(bs, cs)}
enc['he'] = 256
enc['<|endoftext|>'] = 257
json.dump(enc, open(sys.argv[1] + '/encoder.json', 'w'))
open(sys.argv[1] + '/vocab.bpe', 'w').write('#version: 0.2\nh e\n')
import struct
toks = [bytes([b]) for b in range(256)] + [b'he', b'<|endoftext|>']
hdr = struct.pack('<4I', 20240328, 2, len(toks), 257) + bytes(1024 - 16)
open(sys.argv[1] + '/tok.bin', 'wb').write(hdr + b''.join(bytes([len(t)]) + t for t in toks))
PY
one_line_err "prompt token outside the vocabulary" 2 "token 256 (position 0) is outside the model's vocabulary [0, 256)" \
  "${S[@]}" --weights "$tmp/w.bin" --tokenizer gpt2 --encoder "$tmp/encoder.json" --bpe "$tmp/vocab.bpe" \
  --prompt "hello" --tokens 5
one_line_err "a prompt with a decode-only tokenizer" 2 "add --encoder encoder.json --bpe vocab.bpe" "${S[@]}" \
  --weights "$tmp/w.bin" --tokenizer gpt2 --tokenizer-file "$tmp/tok.bin" --prompt "hi" --tokens 5
one_line_err "no model" 2 "exactly one of --weights FILE and --ckpt DIR" "${S[@]}" --tokens 5
finish
