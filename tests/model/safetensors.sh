#!/usr/bin/env bash
# GPT-2 weights in the Hugging Face safetensors layout (model/safetensors.c):
#  - a GPT-2 fp32 weights file -> safetensors -> weights file is bitwise
#    the same (cmp), and the safetensors file has HF's names and shapes, with
#    the Conv1D matrices transposed (checked element by element in python);
#  - `yoke eval --weights` and `yoke train --init-weights` take the
#    .safetensors file directly (same loss as the weights file), also with
#    HF's `transformer.` prefix and in BF16 (widened);
#  - a missing or misshaped tensor is one error naming it (and both shapes).
set -u
. "$(dirname "$0")/../lib.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$YOKE" data prepare --out "$tmp/data" /usr/share/common-licenses/* > /dev/null || { fail "data prepare"; finish; exit 1; }
cat > "$tmp/job.yaml" <<YAML
model: {name: tiny}
data: {train: "$tmp/data/train_*.bin", val: "$tmp/data/val_*.bin"}
train: {micro_batch: 2, seq_len: 32, steps: 5, threads: 1, val_batches: 2}
YAML
expect_ok "train writes a GPT-2 weights file" "$YOKE" train "$tmp/job.yaml" --save-weights "$tmp/w.bin"
expect_ok "weights file -> safetensors" "$YOKE" weights convert "$tmp/w.bin" "$tmp/m.safetensors"
expect_ok "safetensors -> weights file" "$YOKE" weights convert "$tmp/m.safetensors" "$tmp/w2.bin"
cmp "$tmp/w.bin" "$tmp/w2.bin" && pass "round trip is bitwise (cmp)" || fail "round trip differs"

# the layout, read with plain python against the llm.c file (tensor-major)
python3 - "$tmp/w.bin" "$tmp/m.safetensors" "$tmp" <<'PY' > "$tmp/py.out" 2>&1 && pass "HF names, shapes and transposes: $(cat "$tmp/py.out")" || fail "layout: $(cat "$tmp/py.out")"
import json, struct, sys
w = open(sys.argv[1], "rb").read(); s = open(sys.argv[2], "rb").read(); tmp = sys.argv[3]
h = struct.unpack("<256i", w[:1024]); maxT, V, L, NH, C, Vp = h[2:8]
n = struct.unpack("<Q", s[:8])[0]; hdr = json.loads(s[8:8 + n]); base = 8 + n
def st(name, i):
    e = hdr[name]; return struct.unpack_from("<f", s, base + e["data_offsets"][0] + 4 * i)[0]
sizes = [("wte", Vp * C), ("wpe", maxT * C)] + [(k, L * m) for k, m in [("ln1w", C), ("ln1b", C), ("qkvw", 3 * C * C),
        ("qkvb", 3 * C), ("attprojw", C * C), ("attprojb", C), ("ln2w", C), ("ln2b", C), ("fcw", 4 * C * C), ("fcb", 4 * C),
        ("fcprojw", 4 * C * C), ("fcprojb", C)]] + [("lnfw", C), ("lnfb", C)]
off, pos = {}, 1024
for k, m in sizes: off[k] = pos; pos += 4 * m
def ours(k, i): return struct.unpack_from("<f", w, off[k] + 4 * i)[0]
assert hdr["wte.weight"]["shape"] == [V, C] and hdr["wpe.weight"]["shape"] == [maxT, C], "wte/wpe shapes"
assert hdr["h.1.attn.c_attn.weight"]["shape"] == [C, 3 * C] and hdr["h.1.mlp.c_proj.weight"]["shape"] == [4 * C, C]
assert hdr["ln_f.bias"]["shape"] == [C] and hdr["__metadata__"]["n_head"] == str(NH)
checked = 0
for (r, c) in [(0, 0), (1, 5), (C - 1, 3 * C - 1), (7, 100)]:
    # layer 1's qkvw (3C, C): ours[c][r] is HF c_attn.weight[r][c]
    assert ours("qkvw", 3 * C * C + c * C + r) == st("h.1.attn.c_attn.weight", r * 3 * C + c), ("c_attn", r, c); checked += 1
for (r, c) in [(0, 1), (4 * C - 1, C - 1), (9, 2)]:
    # layer 0's fcprojw (C, 4C): ours[c][r] is HF mlp.c_proj.weight[r][c]
    assert ours("fcprojw", c * 4 * C + r) == st("h.0.mlp.c_proj.weight", r * C + c), ("c_proj", r, c); checked += 1
assert ours("wte", 5 * C + 3) == st("wte.weight", 5 * C + 3) and ours("lnfb", 2) == st("ln_f.bias", 2)
# variants for the loader tests: transformer. prefix, BF16, a missing and a misshaped tensor
def write(path, hdr2, data):
    t = json.dumps(hdr2).encode(); t += b" " * (-len(t) % 8)
    open(path, "wb").write(struct.pack("<Q", len(t)) + t + data)
data = s[base:]
write(tmp + "/prefix.safetensors", {("transformer." + k if k != "__metadata__" else k): v for k, v in hdr.items()}, data)
h2 = {k: v for k, v in hdr.items() if k not in ("__metadata__", "h.1.mlp.c_fc.weight")}
write(tmp + "/missing.safetensors", h2, data)
h3 = json.loads(json.dumps(hdr)); h3["h.0.attn.c_proj.weight"]["shape"] = [C // 2, 2 * C]
write(tmp + "/shape.safetensors", h3, data)
# BF16: the upper half of every f32, offsets halved
h4, out = {}, bytearray()
for k, v in hdr.items():
    if k == "__metadata__": continue
    a, b = v["data_offsets"]; raw = data[a:b]
    h4[k] = {"dtype": "BF16", "shape": v["shape"], "data_offsets": [len(out), len(out) + (b - a) // 2]}
    out += b"".join(raw[i + 2:i + 4] for i in range(0, len(raw), 4))
write(tmp + "/bf16.safetensors", h4, bytes(out))
print(f"{checked} transposed elements match")
PY

l1=$("$YOKE" eval --weights "$tmp/w.bin" --data "$tmp/data/val_*.bin" 2>&1)
for f in m prefix; do
  l2=$("$YOKE" eval --weights "$tmp/$f.safetensors" --data "$tmp/data/val_*.bin" 2>&1)
  [ -n "$l1" ] && [ "$l1" = "$l2" ] && pass "eval of $f.safetensors = eval of the weights file" || fail "eval $f: '$l2' vs '$l1'"
done
lb=$("$YOKE" eval --weights "$tmp/bf16.safetensors" --data "$tmp/data/val_*.bin" 2>&1 | sed -n 's/eval: loss \([0-9.]*\).*/\1/p')
la=$(echo "$l1" | sed -n 's/eval: loss \([0-9.]*\).*/\1/p')
close_to "$lb" "$la" 0.05 && pass "BF16 safetensors widened: loss $lb vs $la" || fail "bf16 loss '$lb' vs '$la'"
expect_ok "train --init-weights model.safetensors" "$YOKE" train "$tmp/job.yaml" --init-weights "$tmp/prefix.safetensors" --steps 2
expect_ok "train --save-weights X.safetensors writes the HF layout" "$YOKE" train "$tmp/job.yaml" --steps 2 --save-weights "$tmp/out.safetensors"
head -c 9 "$tmp/out.safetensors" | tail -c 1 | grep -q '{' && pass "saved file starts with a safetensors header" || fail "saved file"
expect_fail 1 "a missing tensor is refused" "$YOKE" eval --weights "$tmp/missing.safetensors" --data "$tmp/data/val_*.bin"
expect_stderr "tensor h.1.mlp.c_fc.weight is missing (a GPT-2 of this shape needs it, (64, 256))" \
  "$YOKE" eval --weights "$tmp/missing.safetensors" --data "$tmp/data/val_*.bin"
expect_stderr "tensor h.0.attn.c_proj.weight has shape (32, 128), this GPT-2 needs (64, 64)" \
  "$YOKE" train "$tmp/job.yaml" --init-weights "$tmp/shape.safetensors" --steps 1
[ "$("$YOKE" train "$tmp/job.yaml" --init-weights "$tmp/shape.safetensors" --steps 1 2>&1 | grep -c ERROR)" = 1 ] \
  && pass "one error line" || fail "error lines"
finish
