#!/usr/bin/python3
"""PyTorch baseline for `yoke bench train` and `yoke bench scale`.

Runs the same GPT-2 (pre-LN, tanh GELU, tied LM head, vocab padded to Vp) at
the same shapes as yoke, fp32 on the CPU, with AdamW, and prints one JSON
object per line: {"impl": "pytorch" | "pytorch-ddp", "model", "threads", "B",
"T", "ranks", "ms_per_step", "tokens_per_s", "comm_wait_frac"}.

It is run with Debian's system Python (/usr/bin/python3, python3-torch 1.13).
Best configuration for the peer: thread count pinned (torch.set_num_threads,
OMP/OpenBLAS env set by the caller), OMP_WAIT_POLICY=PASSIVE, and glibc malloc
thresholds set by the caller; warm-up steps are excluded; the median of the
timed steps is reported.

DDP mode (--ranks N): spawns N processes with torch.distributed (gloo) on
127.0.0.1, each with --threads threads, and reports the median step time of
rank 0 plus the fraction of backward time spent in the all-reduce hook.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.ln1 = nn.LayerNorm(C, eps=1e-5)
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)
        self.ln2 = nn.LayerNorm(C, eps=1e-5)
        self.fc = nn.Linear(C, 4 * C)
        self.fcproj = nn.Linear(4 * C, C)
        self.NH = NH

    def forward(self, x):
        B, T, C = x.shape
        h = self.ln1(x)
        q, k, v = self.qkv(h).split(C, dim=2)
        hd = C // self.NH
        q = q.view(B, T, self.NH, hd).transpose(1, 2)
        k = k.view(B, T, self.NH, hd).transpose(1, 2)
        v = v.view(B, T, self.NH, hd).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        att = att.masked_fill(~mask, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.proj(y)
        x = x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))
        return x


class GPT(nn.Module):
    def __init__(self, L, C, NH, V, Vp, maxT):
        super().__init__()
        self.V = V
        self.wte = nn.Embedding(Vp, C)
        self.wpe = nn.Embedding(maxT, C)
        self.blocks = nn.ModuleList([Block(C, NH) for _ in range(L)])
        self.lnf = nn.LayerNorm(C, eps=1e-5)

    def forward(self, idx, targets):
        B, T = idx.shape
        pos = torch.arange(T)
        x = self.wte(idx) + self.wpe(pos)
        for b in self.blocks:
            x = b(x)
        x = self.lnf(x)
        logits = x @ self.wte.weight.t()
        logits = logits[:, :, : self.V]
        return F.cross_entropy(logits.reshape(-1, self.V), targets.reshape(-1))


PRESETS = {
    "tiny": (2, 64, 4, 256, 256),
    "small": (4, 128, 4, 256, 256),
    "d6": (6, 384, 6, 50257, 1024),
    "d12": (12, 768, 12, 50257, 1024),
    "d24": (24, 1024, 16, 50257, 1024),
}


def build(model):
    L, C, NH, V, maxT = PRESETS[model]
    Vp = (V + 127) // 128 * 128
    torch.manual_seed(0)
    return GPT(L, C, NH, V, Vp, maxT), V


def run_steps(m, V, B, T, steps, warmup, on_step=None):
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, V, (B, T), generator=g)
    y = torch.randint(0, V, (B, T), generator=g)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = m(x, y)
        loss.backward()
        if on_step:
            on_step()
        opt.step()
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
    return statistics.median(times)


def ddp_worker(rank, args, q):
    import torch.distributed as dist
    torch.set_num_threads(args.threads)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(args.port)
    dist.init_process_group("gloo", rank=rank, world_size=args.ranks)
    m, V = build(args.model)
    comm = {"t": 0.0}

    # Time spent inside the gradient all-reduce: wrap the comm hook.
    def hook(state, bucket):
        t0 = time.perf_counter()
        fut = dist.all_reduce(bucket.buffer(), async_op=True).get_future()

        def done(f):
            comm["t"] += time.perf_counter() - t0
            return f.value()[0] / args.ranks
        return fut.then(done)

    dm = nn.parallel.DistributedDataParallel(m)
    dm.register_comm_hook(None, hook)

    def reset():
        comm["steps"] = comm.get("steps", 0) + 1
    med = run_steps(dm, V, args.B, args.T, args.steps, args.warmup, on_step=reset)
    if rank == 0:
        # all-reduce time per step (averaged over every step, warm-up included)
        q.put((med, comm["t"] / max(comm["steps"], 1)))
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="d12", choices=sorted(PRESETS))
    ap.add_argument("--B", type=int, default=4)
    ap.add_argument("--T", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--ranks", type=int, default=1)
    ap.add_argument("--port", type=int, default=29561)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = {"model": args.model, "threads": args.threads, "B": args.B, "T": args.T, "ranks": args.ranks,
           "precision": "fp32", "grad_accum": 1}
    if args.ranks == 1:
        m, V = build(args.model)
        med = run_steps(m, V, args.B, args.T, args.steps, args.warmup)
        out["impl"] = "pytorch"
        out["comm_wait_frac"] = 0.0
    else:
        import torch.multiprocessing as mp
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        mp.spawn(ddp_worker, args=(args, q), nprocs=args.ranks, join=True)
        med, comm_s = q.get()
        out["impl"] = "pytorch-ddp"
        out["comm_wait_frac"] = min(1.0, comm_s / med)
    out["ms_per_step"] = med * 1e3
    out["tokens_per_s"] = args.B * args.T * args.ranks / med
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
