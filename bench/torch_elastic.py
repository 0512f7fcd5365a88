#!/usr/bin/python3
"""PyTorch baseline of `yoke bench elastic`: one worker of a job run by
torchrun's elastic agent (torch.distributed.run, PyTorch 1.13).

The same GPT-2 as bench/torch_gpt2.py (imported from it), DDP over gloo, fp32
AdamW, --accum micro-batches of B x T per rank per step (no_sync on all but
the last), random tokens drawn from a generator seeded by (step, rank,
micro-batch). Rank 0 saves a checkpoint (model, optimizer, step) every
--ckpt-every steps to --ckpt-dir (written to a temporary name, then renamed),
and every worker resumes from it on start: what a torchrun user does, since
the agent restarts every worker when one dies.

Rank 0 prints one JSON object per line, flushed, read by the benchmark as
they arrive:
  {"event": "start", "restart": N}          the process started (before torch is imported)
  {"event": "pg", "restart": N}             the process group is formed
  {"event": "restored", "step": S, ...}     the checkpoint is loaded (S = 0: none)
  {"step": S, "loss": L, "restart": N}      step S completed
N is TORCHELASTIC_RESTART_COUNT: 0 for the first start.
"""
import json
import os
import sys
import time

RESTART = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
RANK = int(os.environ.get("RANK", "0"))


def say(obj):
    if RANK == 0:
        obj["restart"] = RESTART
        print(json.dumps(obj), flush=True)


say({"event": "start"})

import argparse  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpt2 import build  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="d6")
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--T", type=int, default=64)
    ap.add_argument("--accum", type=int, default=3)
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--ckpt-every", type=int, default=10)
    ap.add_argument("--ckpt-dir", required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo")
    say({"event": "pg", "world": dist.get_world_size()})
    rank = dist.get_rank()
    m, V = build(args.model)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.0)
    path = os.path.join(args.ckpt_dir, "ckpt.pt")
    start = 0
    if os.path.exists(path):
        ck = torch.load(path)
        m.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        start = ck["step"]
    dm = nn.parallel.DistributedDataParallel(m)
    say({"event": "restored", "step": start})
    for step in range(start, args.steps):
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for mb in range(args.accum):
            g = torch.Generator().manual_seed((step * 4096 + rank) * 64 + mb)
            x = torch.randint(0, V, (args.B, args.T), generator=g)
            y = torch.randint(0, V, (args.B, args.T), generator=g)
            if mb < args.accum - 1:
                with dm.no_sync():
                    loss = dm(x, y) / args.accum
                    loss.backward()
            else:
                loss = dm(x, y) / args.accum
                loss.backward()
            total += loss.item()
        opt.step()
        done = step + 1
        if rank == 0 and args.ckpt_every > 0 and done % args.ckpt_every == 0:
            tmp = path + ".tmp"
            torch.save({"model": m.state_dict(), "opt": opt.state_dict(), "step": done}, tmp)
            os.replace(tmp, path)
        say({"step": done, "loss": total})
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
