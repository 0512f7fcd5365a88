#!/usr/bin/python3
"""gloo baseline for `yoke bench coll`: torch.distributed all-reduce (gloo,
TCP on 127.0.0.1) over --world local processes, sizes --minbytes..--maxbytes
by --factor, for --dtypes (f32,f16,bf16). Prints one JSON object per size and
dtype from rank 0: {"op","impl":"gloo","algo","transport","dtype","ranks",
"bytes","time_us","algbw_gbs","busbw_gbs","wrong"}. Time is the median over
iterations of the slowest rank (all_reduce of the per-iteration times, MAX).
Run with Debian's /usr/bin/python3 (python3-torch)."""
import argparse
import datetime
import json
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

DT = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def worker(rank, args, port):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=args.world,
                            timeout=datetime.timedelta(seconds=120))
    for name in args.dtypes.split(","):
        dt = DT[name]
        esz = torch.tensor([], dtype=dt).element_size()
        size = args.minbytes
        while size <= args.maxbytes:
            n = size // esz
            i = torch.arange(n, dtype=torch.int64)
            x = ((i * 7 + rank * 3) % 11 - 5).to(dt)
            try:
                for _ in range(2):
                    y = x.clone()
                    dist.all_reduce(y)
                times = []
                budget = time.perf_counter()
                for it in range(20):
                    y = x.clone()
                    dist.barrier()
                    t0 = time.perf_counter()
                    dist.all_reduce(y)
                    times.append(time.perf_counter() - t0)
                    # stop together: a rank that stopped alone would leave
                    # the others in an all_reduce nobody joins (a hang)
                    stop = torch.tensor([1 if it >= 2 and time.perf_counter() - budget > 0.5 else 0])
                    dist.all_reduce(stop, op=dist.ReduceOp.MAX)
                    if stop.item():
                        break
                t = torch.tensor(times, dtype=torch.float64)
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                want = sum(((i * 7 + r * 3) % 11 - 5) for r in range(args.world)).to(dt)
                wrong = int((y != want).sum())
                med = statistics.median(t.tolist())
                if rank == 0:
                    algbw = size / med / 1e9
                    print(json.dumps({"op": "allreduce", "impl": "gloo", "algo": "gloo-default", "transport": "tcp",
                                      "dtype": name, "ranks": args.world, "bytes": size, "time_us": med * 1e6,
                                      "algbw_gbs": algbw, "busbw_gbs": algbw * 2 * (args.world - 1) / args.world,
                                      "wrong": wrong}, separators=(",", ":")), flush=True)
            except RuntimeError as e:  # e.g. a dtype gloo cannot reduce
                if rank == 0:
                    print(f"gloo {name} {size}: {e}", flush=True)
                break
            size *= args.factor
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--minbytes", type=int, default=4096)
    p.add_argument("--maxbytes", type=int, default=256 << 20)
    p.add_argument("--factor", type=int, default=2)
    p.add_argument("--dtypes", default="f32,f16")
    args = p.parse_args()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(worker, args=(args, port), nprocs=args.world, join=True)


if __name__ == "__main__":
    main()
