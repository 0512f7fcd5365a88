#!/usr/bin/python3
"""gloo baseline for `yoke bench coll`: torch.distributed all-reduce (gloo,
TCP on 127.0.0.1) over --world local processes, sizes --minbytes..--maxbytes
by --factor, for --dtypes (f32,f16,bf16). Prints one JSON object per size and
dtype from rank 0: {"op","impl":"gloo","algo","transport","dtype","ranks",
"bytes","time_us","algbw_gbs","busbw_gbs","calls_per_sample","wrong"}.

Timed as bench/bench_coll.c times yoke and MPI: --warmup calls, then up to
--iters samples (at least 3; fewer once the first sample's time per call
times the samples taken passes 0.5 s), each a barrier and then a batch
of back-to-back all-reduces whose count --batch gives by size
("min_bytes:calls,...", first match wins; bench_coll.c passes its own rule);
time per call = sample / calls, the median over samples of the slowest rank
(all_reduce of the per-sample times, MAX). gloo reduces in place, so each
call of a batch gets its own copy of the input, made before the barrier.
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


def parse_rule(text):
    """"262144:1,16384:10,0:50" -> [(262144, 1), (16384, 10), (0, 50)]."""
    rule = []
    for item in text.split(","):
        lo, calls = item.split(":")
        if int(calls) < 1:
            raise ValueError(f"--batch: {item}: calls must be >= 1")
        rule.append((int(lo), int(calls)))
    return rule


def calls_per_sample(size, rule):
    for lo, calls in rule:
        if size >= lo:
            return calls
    return 1


def worker(rank, args, port):
    rule = parse_rule(args.batch)
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
            calls = calls_per_sample(size, rule)
            try:
                for _ in range(args.warmup):
                    y = x.clone()
                    dist.all_reduce(y)
                times = []
                for it in range(args.iters):
                    ys = [x.clone() for _ in range(calls)]
                    dist.barrier()
                    t0 = time.perf_counter()
                    for y in ys:
                        dist.all_reduce(y)
                    times.append((time.perf_counter() - t0) / calls)
                    # the stop rule of bench_coll.c's time_row: after 3
                    # samples, once the first one's time per call times the
                    # samples taken passes 0.5 s; decided together: a rank
                    # that stopped alone would leave the others in an
                    # all_reduce nobody joins (a hang)
                    stop = torch.tensor([1 if it >= 2 and times[0] * (it + 1) > 0.5 else 0])
                    dist.all_reduce(stop, op=dist.ReduceOp.MAX)
                    if stop.item():
                        break
                t = torch.tensor(times, dtype=torch.float64)
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                want = sum(((i * 7 + r * 3) % 11 - 5) for r in range(args.world)).to(dt)
                wrong = sum(int((y != want).sum()) for y in ys)
                med = statistics.median(t.tolist())
                if rank == 0:
                    algbw = size / med / 1e9
                    print(json.dumps({"op": "allreduce", "impl": "gloo", "algo": "gloo-default", "transport": "tcp",
                                      "dtype": name, "ranks": args.world, "bytes": size, "time_us": med * 1e6,
                                      "algbw_gbs": algbw, "busbw_gbs": algbw * 2 * (args.world - 1) / args.world,
                                      "calls_per_sample": calls, "wrong": wrong}, separators=(",", ":")), flush=True)
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
    p.add_argument("--iters", type=int, default=20, help="samples per size, at most")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per size first")
    p.add_argument("--batch", default="262144:1,16384:10,0:50",
                   help="back-to-back calls per sample by size, min_bytes:calls,... (first match wins)")
    args = p.parse_args()
    parse_rule(args.batch)  # a bad rule fails here, before any process starts
    if args.iters < 1 or args.warmup < 0:
        p.error("--iters must be >= 1 and --warmup >= 0")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(worker, args=(args, port), nprocs=args.world, join=True)


if __name__ == "__main__":
    main()
