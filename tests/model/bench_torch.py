#!/usr/bin/python3
"""bench_torch.py - PyTorch fp32 baseline of the same GPT-2 step (forward +
backward, no optimizer) for comparison with bench_model.
Usage: OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench_torch.py [L C NH V B T threads steps]"""
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

a = [int(x) for x in sys.argv[1:]] or [12, 768, 12, 50257, 4, 64, 1, 3]
L, C, NH, V, B, T, TH, STEPS = a
torch.set_num_threads(TH)
VP = (V + 127) // 128 * 128


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.fc, self.fcproj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)
        self.register_buffer("mask", torch.tril(torch.ones(T, T, dtype=torch.bool)))

    def forward(self, x):
        h = self.ln1(x)
        q, k, v = self.qkv(h).split(C, dim=2)
        q, k, v = [t.view(B, T, NH, C // NH).transpose(1, 2) for t in (q, k, v)]
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // NH))
        att = att.masked_fill(~self.mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        return x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(VP, C), nn.Embedding(T, C)
        self.blocks = nn.ModuleList([Block() for _ in range(L)])
        self.lnf = nn.LayerNorm(C)

    def forward(self, idx, tgt):
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for b in self.blocks:
            x = b(x)
        logits = self.lnf(x) @ self.wte.weight[:V].T
        return F.cross_entropy(logits.view(-1, V), tgt.view(-1))


m = GPT()
idx = torch.randint(0, V, (B, T))
tgt = torch.randint(0, V, (B, T))
best, bestcpu = 1e30, 1e30
for s in range(STEPS + 1):
    t0, c0 = time.time(), time.process_time()
    m.zero_grad(set_to_none=False)
    loss = m(idx, tgt)
    loss.backward()
    dt, dc = time.time() - t0, time.process_time() - c0
    if s > 0:
        best, bestcpu = min(best, dt), min(bestcpu, dc)
print("pytorch L=%d C=%d B=%d T=%d threads=%d: %.1f ms/step, %.0f tok/s, cpu %.1f ms/step"
      % (L, C, B, T, TH, best * 1e3, B * T / best, bestcpu * 1e3))
