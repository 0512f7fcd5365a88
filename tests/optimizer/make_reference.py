#!/usr/bin/python3
"""Write tests/optimizer/adamw_ref.txt: a PyTorch reference for yoke's AdamW,
learning-rate schedule and gradient clipping.

Run with Debian's system Python (it has python3-torch; the pyenv python3 on
PATH may not):   /usr/bin/python3 tests/optimizer/make_reference.py

A handful of tensors (2-D ones get weight decay, 1-D ones do not, as in
GPT-2) live in one flat arena. For 5 steps: fixed random gradients, clipping
by global L2 norm (torch.nn.utils.clip_grad_norm_), lr from linear warmup +
cosine decay (the llm.c formula), then torch.optim.AdamW. The file records
the initial arena, every step's gradients, lr, gradient norm and the arena
after the step, and the final AdamW moments.

Format (text, one record per line, floats with 9 significant digits, which
round-trip fp32 exactly):
  hparams lr min_lr warmup steps beta1 beta2 eps weight_decay grad_clip
  tensor NAME OFFSET NUMEL DECAY          (one line per tensor, arena order)
  arena N                                 (arena size in elements)
  init v0 v1 ...                          (params before step 0)
  step S LR NORM                          (then the next three lines)
  grad v0 v1 ...                          (raw gradients of step S)
  param v0 v1 ...                         (params after step S)
  ...
  exp_avg v0 ...                          (m after the last step)
  exp_avg_sq v0 ...                       (v after the last step)
"""
import math
import os
import sys

import torch

LR, MIN_LR, WARMUP, STEPS = 1e-2, 1e-3, 2, 5
BETA1, BETA2, EPS, WD, CLIP = 0.9, 0.95, 1e-8, 0.1, 1.0
# name, shape; 2-D tensors decay (weights, embeddings), 1-D do not (biases, LayerNorm)
SHAPES = [("wte", (7, 5)), ("ln1.w", (5,)), ("ln1.b", (5,)), ("fc.w", (6, 5)), ("fc.b", (6,))]
# per-step gradient magnitudes: some steps clip (norm > 1), some do not
GRAD_SCALE = [3.0, 0.2, 1.5, 0.05, 2.0]


def lr_at(step):
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    if step >= STEPS:
        return MIN_LR
    ratio = (step - WARMUP) / (STEPS - WARMUP)
    return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (LR - MIN_LR)


def fmt(t):
    return " ".join("%.9g" % x for x in t.detach().reshape(-1).tolist())


def main():
    torch.manual_seed(1234)
    params = [torch.nn.Parameter(torch.randn(*shape) * 0.5) for _, shape in SHAPES]
    decay = [p for p, (_, s) in zip(params, SHAPES) if len(s) == 2]
    nodecay = [p for p, (_, s) in zip(params, SHAPES) if len(s) != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=LR, betas=(BETA1, BETA2), eps=EPS)
    flat = lambda ts: torch.cat([t.detach().reshape(-1) for t in ts])
    out = []
    out.append("hparams %r %r %d %d %r %r %r %r %r" % (LR, MIN_LR, WARMUP, STEPS, BETA1, BETA2, EPS, WD, CLIP))
    off = 0
    for (name, shape), p in zip(SHAPES, params):
        out.append("tensor %s %d %d %d" % (name, off, p.numel(), 1 if len(shape) == 2 else 0))
        off += p.numel()
    out.append("arena %d" % off)
    out.append("init " + fmt(flat(params)))
    gen = torch.Generator().manual_seed(99)
    for step in range(STEPS):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen) * GRAD_SCALE[step] / math.sqrt(off)
        raw = flat([p.grad for p in params])
        norm = torch.nn.utils.clip_grad_norm_(params, CLIP)
        lr = lr_at(step)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        out.append("step %d %r %.9g" % (step, lr, float(norm)))
        out.append("grad " + fmt(raw))
        out.append("param " + fmt(flat(params)))
    out.append("exp_avg " + fmt(flat([opt.state[p]["exp_avg"] for p in params])))
    out.append("exp_avg_sq " + fmt(flat([opt.state[p]["exp_avg_sq"] for p in params])))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "adamw_ref.txt")
    with open(path, "w") as f:
        f.write("# written by make_reference.py with torch %s; do not edit\n" % torch.__version__)
        f.write("\n".join(out) + "\n")
    print("wrote", path, file=sys.stderr)


if __name__ == "__main__":
    main()
