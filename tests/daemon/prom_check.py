#!/usr/bin/env python3
"""Parse a Prometheus text exposition (stdin) as yoke's /metrics serves it and
check the step loop's metrics are there and sane. argv[1] is the rank."""
import re
import sys

rank = sys.argv[1]
vals, types = {}, {}
for line in sys.stdin:
    line = line.rstrip("\n")
    if not line:
        continue
    if line.startswith("# TYPE "):
        _, _, name, kind = line.split(" ")
        assert kind in ("gauge", "counter"), line
        types[name] = kind
        continue
    if line.startswith("# HELP "):
        continue
    m = re.fullmatch(r'([a-z_]+)\{rank="(\d+)"\} (\S+)', line)
    assert m, "bad sample line: " + line
    assert m.group(2) == rank, line
    assert m.group(1) in types, "sample before its TYPE: " + line
    vals[m.group(1)] = float(m.group(3))
for k in ("yoke_step", "yoke_loss", "yoke_tokens_per_second", "yoke_allreduce_seconds",
          "yoke_allreduce_bytes", "yoke_loss_scale", "yoke_heartbeat_age_seconds"):
    assert k in vals, "missing " + k
assert vals["yoke_step"] >= 1, vals
assert vals["yoke_loss"] > 0, vals
assert vals["yoke_heartbeat_age_seconds"] < 2, vals
assert types["yoke_allreduce_bytes_total"] == "counter"
print("ok", len(vals), "metrics")
