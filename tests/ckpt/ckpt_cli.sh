#!/bin/bash
# `yoke ckpt ls|verify|inspect|convert` end to end on a tiny GPT-2
# checkpoint (the model's tensor table) written by the test driver: listing, verification and
# corruption messages, resharding, GPT-2 and safetensors exports parsed back
# with plain python3 (no torch).
source "$YK_SOURCE_DIR/tests/lib.sh"
DRIVER=${CKPT_DRIVER:?}
T=$(mktemp -d /tmp/yk_ckpt_cli.XXXXXX)
trap 'rm -rf "$T"' EXIT
D=$T/ck
expect_ok "driver writes a GPT-2 shaped checkpoint" "$DRIVER" gpt2 "$D"
CK=$D/step-00000005

expect_ok "ckpt --help" "$YOKE" ckpt --help
expect_fail 2 "ckpt without action" "$YOKE" ckpt
expect_fail 2 "unknown action" "$YOKE" ckpt frobnicate
expect_fail 2 "unknown flag" "$YOKE" ckpt verify "$D" --bogus
expect_stderr "unknown option '--bogus'" "$YOKE" ckpt verify "$D" --bogus
expect_fail 2 "convert needs a mode" "$YOKE" ckpt convert "$D"
expect_fail 2 "convert --world needs --out" "$YOKE" ckpt convert "$D" --world 3
expect_fail 2 "bad --world" "$YOKE" ckpt convert "$D" --world zero --out "$T/x"

out=$("$YOKE" ckpt ls "$D")
echo "$out" | grep -qE '^5 +2 .*latest' && pass "ls shows step 5, world 2, latest" || fail "ls: $out"
expect_ok "verify a good checkpoint (root)" "$YOKE" ckpt verify "$D"
expect_ok "verify a good checkpoint (dir)" "$YOKE" ckpt verify "$CK"

out=$("$YOKE" ckpt inspect "$CK")
for w in "step        5" "world       2" "h1.qkvw" "(24, 8)" "vocab_size" "shard-00001-of-00002.yks" "name: tiny-test"; do
  case "$out" in *"$w"*) pass "inspect shows '$w'" ;; *) fail "inspect lacks '$w': $out" ;; esac
done
"$YOKE" ckpt inspect "$CK" --json | python3 -c '
import json, sys
m = json.load(sys.stdin)
assert m["format"] == "yoke-checkpoint" and m["version"] == 2 and m["step"] == 5 and m["world"] == 2
assert m["model"]["vocab_size"] == 13 and len(m["shards"]) == 2
a = m["arenas"][0]
assert a["name"] == "params" and [t["name"] for t in a["tensors"]][:2] == ["wte", "wpe"]
assert sum(c["numel"] for c in a["chunks"]) == a["numel"]
' && pass "inspect --json is the manifest" || fail "inspect --json"

# reshard offline 2 -> 3 and 2 -> 1
expect_ok "convert --world 3" "$YOKE" ckpt convert "$D" --world 3 --out "$T/w3"
expect_ok "verify the resharded checkpoint" "$YOKE" ckpt verify "$T/w3"
[ -f "$T/w3/step-00000005/shard-00002-of-00003.yks" ] && pass "3 shard files" || fail "no shard 2 of 3: $(ls "$T/w3"/*)"
expect_ok "convert --world 1" "$YOKE" ckpt convert "$T/w3" --world 1 --out "$T/w1" --level 3
"$YOKE" ckpt inspect "$T/w1" | grep -q "world       1" && pass "w1 is world 1" || fail "w1 world"

# exports: GPT-2 weights file and safetensors, values params[i] = i/1000
expect_ok "export gpt2" "$YOKE" ckpt convert "$D" --export-gpt2 "$T/model.bin"
python3 - "$T/model.bin" <<'PY' && pass "GPT-2 export: header and data in file (tensor-major) order" || fail "GPT-2 export content"
import struct, sys
b = open(sys.argv[1], "rb").read()
h = struct.unpack("<256i", b[:1024])
assert h[:8] == (20240326, 3, 8, 13, 2, 2, 8, 128), h[:8]
L, C, Vp, T = 2, 8, 128, 8
kinds = [C, C, 3*C*C, 3*C, C*C, C, C, C, 4*C*C, 4*C, 4*C*C, C]  # per layer, arena order
n = Vp*C + T*C + L*sum(kinds) + 2*C
assert len(b) == 1024 + 4*n, (len(b), n)
f = struct.unpack("<%df" % n, b[1024:])
# the arena (params[i] = i/1000) is layer-major; the file holds each kind for all layers in turn
order = list(range(Vp*C + T*C))
base, size = Vp*C + T*C, sum(kinds)
for k in range(12):
    for l in range(L):
        o = base + l*size + sum(kinds[:k])
        order += range(o, o + kinds[k])
order += range(base + L*size, n)
assert len(order) == n and all(abs(f[j] - i/1000.0) < 1e-6 for j, i in enumerate(order))
PY
expect_ok "export safetensors" "$YOKE" ckpt convert "$D" --export-safetensors "$T/model.safetensors"
python3 - "$T/model.safetensors" <<'PY' && pass "safetensors export parses back" || fail "safetensors content"
import json, struct, sys
b = open(sys.argv[1], "rb").read()
hl = struct.unpack("<Q", b[:8])[0]
assert hl % 8 == 0
h = json.loads(b[8:8+hl])
data = b[8+hl:]
assert h["__metadata__"]["step"] == "5"
q = h["h0.qkvw"]
assert q["dtype"] == "F32" and q["shape"] == [24, 8]
end = max(v["data_offsets"][1] for k, v in h.items() if k != "__metadata__")
assert end == len(data)
s, e = q["data_offsets"]
vals = struct.unpack("<%df" % ((e - s)//4), data[s:e])
first = s // 4  # tensors are stored in arena order from offset 0
assert all(abs(v - (first + i)/1000.0) < 1e-6 for i, v in enumerate(vals))
assert set(h) - {"__metadata__"} >= {"wte", "wpe", "lnfb"}
PY
expect_fail 1 "export of a missing arena" "$YOKE" ckpt convert "$D" --export-safetensors "$T/x.st" --arena nope
expect_stderr "has no arena 'nope'" "$YOKE" ckpt convert "$D" --export-safetensors "$T/x.st" --arena nope

# corruption: a flipped byte in a shard, a truncated shard, a missing shard, a flipped manifest byte
flip() { python3 -c 'import sys; p, o = sys.argv[1], int(sys.argv[2]); f = open(p, "r+b"); f.seek(o); c = f.read(1); f.seek(o); f.write(bytes([c[0] ^ 0x5a]))' "$1" "$2"; }
cp -r "$T/w3" "$T/c1"; flip "$T/c1/step-00000005/shard-00001-of-00003.yks" 70
expect_fail 1 "verify: flipped byte" "$YOKE" ckpt verify "$T/c1"
expect_stderr "shard-00001-of-00003.yks: checksum mismatch in tensor '" "$YOKE" ckpt verify "$T/c1"
cp -r "$T/w3" "$T/c2"; truncate -s -10 "$T/c2/step-00000005/shard-00002-of-00003.yks"
expect_fail 1 "verify: truncated shard" "$YOKE" ckpt verify "$T/c2"
expect_stderr "shard-00002-of-00003.yks is" "$YOKE" ckpt verify "$T/c2"
cp -r "$T/w3" "$T/c3"; rm "$T/c3/step-00000005/shard-00000-of-00003.yks"
expect_stderr "shard-00000-of-00003.yks is missing or unreadable (it holds tensor wte" "$YOKE" ckpt verify "$T/c3"
# a checkpoint with a missing shard is not the latest: the one before it is
cp -r "$T/w3/step-00000005" "$T/c3/step-00000004"
out=$("$YOKE" ckpt ls "$T/c3")
echo "$out" | grep -qE '^5 .*damaged' && echo "$out" | grep -qE '^4 .*latest' \
  && pass "ls: a missing shard makes step 5 damaged, step 4 latest" || fail "ls missing shard: $out"
# a byte inside the "format" string: the JSON stays valid whatever lengths
# the values before it have (the version string names the git revision)
cp -r "$T/w3" "$T/c4"
flip "$T/c4/step-00000005/manifest.json" "$(python3 -c 'import sys; print(open(sys.argv[1], "rb").read().index(b"yoke-checkpoint") + 1)' "$T/c4/step-00000005/manifest.json")"
expect_fail 1 "verify: flipped manifest byte" "$YOKE" ckpt verify "$T/c4"
cp -r "$T/w3/step-00000005" "$T/c4/step-00000004"
expect_fail 1 "verify --all: one of two damaged" "$YOKE" ckpt verify --all "$T/c4"
"$YOKE" ckpt verify --all "$T/c4" 2>/dev/null | grep -q "ok: $T/c4/step-00000004" && pass "verify --all checks the good one too" || fail "verify --all"
"$YOKE" ckpt ls "$T/c4" | grep -qE '^5 .*damaged' && pass "ls shows the damaged checkpoint" || fail "ls damaged: $("$YOKE" ckpt ls "$T/c4")"
expect_stderr "manifest.json: manifest checksum mismatch" "$YOKE" ckpt verify "$T/c4"
# a save without manifest is listed as incomplete and is not a checkpoint
mkdir -p "$T/c5"; cp -r "$T/w3/step-00000005" "$T/c5/step-00000009.partial"; rm "$T/c5/step-00000009.partial/manifest.json"
out=$("$YOKE" ckpt ls "$T/c5")
echo "$out" | grep -qE '^9 .*incomplete' && pass "ls shows the incomplete save" || fail "ls incomplete: $out"
expect_fail 1 "verify on a root without committed checkpoints" "$YOKE" ckpt verify "$T/c5"
expect_stderr "no committed checkpoint" "$YOKE" ckpt verify "$T/c5"

# the benchmark runs end to end on a tiny model and prints the JSON figures
expect_fail 2 "bench ckpt: unknown flag" "$YOKE" bench ckpt --bogus
expect_ok "bench ckpt --help" "$YOKE" bench ckpt --help
"$YOKE" bench ckpt --layers 1 --channels 64 --vocab 512 --step-ms 100 --json --dir "$T/bench" > "$T/bench.out" 2>&1
tail -1 "$T/bench.out" | python3 -c '
import json, sys
j = json.loads(sys.stdin.read())
for k in ("save_gbs", "load_gbs", "ratio", "stall_frac", "stall_frac_deferred", "ratio_by_kind"):
    assert k in j, k
assert j["save_gbs"] > 0 and j["load_gbs"] > 0 and 1.0 < j["ratio"] < 3.0 and 0 <= j["stall_frac"]
' && pass "bench ckpt --json has save_gbs, load_gbs, ratio, stall_frac" || fail "bench json: $(cat "$T/bench.out")"
finish
