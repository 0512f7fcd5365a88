#!/usr/bin/python3
"""make_reference.py - PyTorch reference fixtures for yoke's GPT-2.

Run with Debian's system Python, which has torch (python3-torch, 1.13):
    /usr/bin/python3 tests/model/make_reference.py [OUTDIR]
OUTDIR defaults to tests/model/fixtures next to this script. Rerunnable: the
weights, batch and every result are a pure function of the seed below.

The model is built from plain tensor ops in float64 (the most accurate
reference; the fp32 C code is compared against it with tolerances):
    L=2 C=32 NH=4 maxT=32 V=250 (padded to Vp=256: exercises the vocab
    padding), batch B=4 T=16.
It writes (all little-endian):
  ref_weights.bin   initial weights, GPT-2 fp32 weights file (version 3)
  ref_grads.bin     d(loss)/d(param) of the batch, in the same file layout
                    (header included), so the C test loads it like weights
  ref_adamw3.bin    parameters after 3 torch.optim.AdamW steps on the same
                    batch (lr 1e-3, betas .9/.999, eps 1e-8, weight decay 0.1
                    on wte, wpe, qkvw, attprojw, fcw, fcprojw only; no clip)
  ref_batch.bin     int32 magic 20241124, B, T, nsteps; int32 inputs (B*T);
                    int32 targets (B*T); float32 loss at the initial weights;
                    float32 loss before each AdamW step (nsteps values)
"""
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

L, C, NH, MAXT, V, B, T = 2, 32, 4, 32, 250, 4, 16
VP = (V + 127) // 128 * 128
STEPS = 3
SEED = 20241124

KINDS = ["ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
         "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb"]
DECAY = {"wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw"}


def make_params(g):
    """Random GPT-2 weights. Not the training init: LayerNorm weights and all
    biases are randomised too, so every gradient path is exercised."""
    def rn(*shape, std=0.02):
        return (torch.randn(*shape, generator=g) * std).float().double()
    p = {
        "wte": rn(V, C, std=0.1),
        "wpe": rn(MAXT, C, std=0.05),
        "ln1w": 1.0 + rn(L, C, std=0.1), "ln1b": rn(L, C, std=0.05),
        "qkvw": rn(L, 3 * C, C, std=0.1), "qkvb": rn(L, 3 * C, std=0.05),
        "attprojw": rn(L, C, C, std=0.1), "attprojb": rn(L, C, std=0.05),
        "ln2w": 1.0 + rn(L, C, std=0.1), "ln2b": rn(L, C, std=0.05),
        "fcw": rn(L, 4 * C, C, std=0.1), "fcb": rn(L, 4 * C, std=0.05),
        "fcprojw": rn(L, C, 4 * C, std=0.1), "fcprojb": rn(L, C, std=0.05),
        "lnfw": 1.0 + rn(C, std=0.1), "lnfb": rn(C, std=0.05),
    }
    for t in p.values():
        t.requires_grad_(True)
    return p


def forward(p, idx, tgt):
    x = p["wte"][idx] + p["wpe"][:T]
    hd = C // NH
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(L):
        h = F.layer_norm(x, (C,), p["ln1w"][l], p["ln1b"][l], 1e-5)
        qkv = h @ p["qkvw"][l].T + p["qkvb"][l]
        q, k, v = qkv.split(C, dim=2)
        q = q.view(B, T, NH, hd).transpose(1, 2)
        k = k.view(B, T, NH, hd).transpose(1, 2)
        v = v.view(B, T, NH, hd).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ p["attprojw"][l].T + p["attprojb"][l]
        h = F.layer_norm(x, (C,), p["ln2w"][l], p["ln2b"][l], 1e-5)
        h = F.gelu(h @ p["fcw"][l].T + p["fcb"][l], approximate="tanh")
        x = x + h @ p["fcprojw"][l].T + p["fcprojb"][l]
    x = F.layer_norm(x, (C,), p["lnfw"], p["lnfb"], 1e-5)
    logits = x @ p["wte"].T  # (B,T,V): the real vocabulary only
    return F.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1))


def file_tensors(p, use_grad):
    """Tensors in weights-file order as float32, wte padded to VP rows."""
    out = []
    get = (lambda n: p[n].grad) if use_grad else (lambda n: p[n])
    wte = torch.zeros(VP, C, dtype=torch.float64)
    wte[:V] = get("wte").detach()
    out.append(wte)
    out.append(get("wpe").detach())
    for k in KINDS:
        out.append(get(k).detach())
    out.append(get("lnfw").detach())
    out.append(get("lnfb").detach())
    return out


def write_weights(path, tensors):
    hdr = [0] * 256
    hdr[:8] = [20240326, 3, MAXT, V, L, NH, C, VP]
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *hdr))
        for t in tensors:
            f.write(t.float().contiguous().numpy().astype("<f4").tobytes())


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "fixtures")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    p = make_params(g)
    idx = torch.randint(0, V, (B, T), generator=g)
    tgt = torch.randint(0, V, (B, T), generator=g)
    idx[0, 0], tgt[0, 1], tgt[3, 15] = V - 1, V - 1, 0  # vocabulary edges

    write_weights(os.path.join(out, "ref_weights.bin"), file_tensors(p, False))
    loss = forward(p, idx, tgt)
    loss.backward()
    write_weights(os.path.join(out, "ref_grads.bin"), file_tensors(p, True))

    names = list(p.keys())
    opt = torch.optim.AdamW(
        [{"params": [p[n] for n in names if n in DECAY], "weight_decay": 0.1},
         {"params": [p[n] for n in names if n not in DECAY], "weight_decay": 0.0}],
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    step_losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        sl = forward(p, idx, tgt)
        sl.backward()
        step_losses.append(float(sl))
        opt.step()
    write_weights(os.path.join(out, "ref_adamw3.bin"), file_tensors(p, False))

    with open(os.path.join(out, "ref_batch.bin"), "wb") as f:
        f.write(struct.pack("<4i", 20241124, B, T, STEPS))
        f.write(idx.to(torch.int32).numpy().astype("<i4").tobytes())
        f.write(tgt.to(torch.int32).numpy().astype("<i4").tobytes())
        f.write(struct.pack("<f", float(loss)))
        f.write(struct.pack("<%df" % STEPS, *step_losses))
    print("loss %.7f, step losses %s -> %s" % (float(loss), step_losses, out))


if __name__ == "__main__":
    main()
