#!/usr/bin/env bash
# train.trace on a real 2-rank job (yoke launch): the rank files parse, the
# spans of each step cover the step span within 1%, the size stays under
# 1 MB per rank per 100 steps, `yoke trace merge` gives monotonic tracks and
# both ranks' spans of every bucket reduction overlap on the aligned clock,
# a pipeline's messages are arrows from one rank's send to the other's
# receive, train.trace_detail=kernel records the kernels by layer and shape
# and trace top lists them, train.trace_steps limits the window, a bad window is one error line, and a
# rank slowed by YK_TEST_DELAY_RANK is named by the coordinator, by
# `yoke status` and by `yoke trace top`.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../daemon/lib-daemon.sh"
. "$(dirname "$0")/../daemon/lib-train.sh"
command -v python3 > /dev/null || { echo "SKIP: python3 is needed to read the traces"; exit 77; }
HB="--set coord.heartbeat_ms=100 --set coord.heartbeat_timeout_ms=5000"
JOB="train --set model.name=tiny --set data.train=$tmp/data/train_*.bin --set train.micro_batch=4
  --set train.seq_len=64 --set train.threads=1 --set comm.bucket_kb=64"

# 1. 60 steps of 2 ranks, traced
out=$tmp/job.log
"$YOKE" launch -n 2 --port 0 -- $JOB --set train.steps=60 --set train.trace=$tmp/t.json --set ckpt.dir=$tmp/ck \
  --set ckpt.every=30 $HB > "$out" 2>&1
rc=$?
[ $rc = 0 ] && [ -s $tmp/t.rank0.json ] && [ -s $tmp/t.rank1.json ] && pass "a traced job writes t.rank0.json and t.rank1.json" \
  || fail "traced job: exit $rc, $(ls $tmp); $(tail -3 "$out")"

python3 - "$tmp" <<'PY' && pass "rank files parse; every step's spans cover it within 1%; < 1 MB per 100 steps" || fail "rank files"
import json, os, sys
tmp = sys.argv[1]
for r in (0, 1):
    p = f"{tmp}/t.rank{r}.json"
    d = json.load(open(p))
    m = d["metadata"]
    assert m["rank"] == r and m["world"] == 2 and m["dropped_events"] == 0, m
    ev = d["traceEvents"]
    steps = [e for e in ev if e.get("ph") == "X" and e["name"] == "step"]
    assert len(steps) == 60, len(steps)
    size = os.path.getsize(p)
    assert size * 100 / 60 < 1e6, f"{p}: {size} bytes for 60 steps"
    xs = [e for e in ev if e.get("ph") == "X" and e["cat"] != "step"]
    covers, total_cover, total_step = [], 0.0, 0.0
    for s in steps:
        t0, t1 = s["ts"], s["ts"] + s["dur"]
        inside = sorted((e for e in xs if e["tid"] == s["tid"] and e["ts"] >= t0 and e["ts"] + e["dur"] <= t1 + 0.001),
                        key=lambda e: (e["ts"], -e["dur"]))
        top, end = [], -1.0
        for e in inside:  # top-level children: not inside an earlier one
            if e["ts"] >= end - 0.001:
                top.append(e)
                end = e["ts"] + e["dur"]
        cover = sum(e["dur"] for e in top)
        covers.append(cover / s["dur"])
        total_cover += cover
        total_step += s["dur"]
        names = {e["name"] for e in top}
        assert {"forward", "backward", "reduce", "update"} <= names, names
    # Every step and all of them: a busy machine may preempt the rank between
    # two spans now and then, so one step may show a gap; the median step
    # and the sum over steps must not.
    covers.sort()
    assert abs(covers[len(covers) // 2] - 1) <= 0.01, f"rank {r}: median step covered {covers[len(covers) // 2]:.4f}"
    assert abs(total_cover / total_step - 1) <= 0.01, f"rank {r}: steps covered {total_cover / total_step:.4f}"
    counters = {e["name"] for e in ev if e.get("ph") == "C"}
    assert {"rss", "reduced", "comm", "loss_scale"} <= counters, counters
    # the other threads' tracks: the comm thread runs the bucket reductions,
    # the checkpoint writer writes the saves of steps 30 and 60
    tracks = {e["args"]["name"]: e["tid"] for e in ev if e.get("name") == "thread_name"}
    assert {"main", "comm dp", "ckpt writer"} <= set(tracks), tracks
    on = lambda t: {e["name"] for e in ev if e.get("ph") == "X" and e["tid"] == tracks[t]}
    assert {"comm allreduce"} <= on("comm dp"), on("comm dp")
    assert "writer write" in on("ckpt writer"), on("ckpt writer")
    assert not any(e["name"].endswith(" layer") for e in xs), "per-layer spans at the default detail"
PY

"$YOKE" trace merge --out $tmp/m.json $tmp/t.rank0.json $tmp/t.rank1.json > $tmp/merge.txt 2>&1 \
  && grep -qE "clocks aligned to rank 0 within \+-[0-9.]+ us" $tmp/merge.txt \
  && pass "trace merge: $(cat $tmp/merge.txt)" || fail "trace merge: $(cat $tmp/merge.txt)"
python3 - "$tmp" <<'PY' && pass "merged: monotonic per track, both ranks' spans of every bucket reduction overlap" || fail "merged trace"
import json, sys
d = json.load(open(sys.argv[1] + "/m.json"))
last, spans = {}, {}
for e in d["traceEvents"]:
    if "ts" not in e or e.get("ph") == "M":
        continue
    k = (e["pid"], e["tid"])
    assert e["ts"] >= last.get(k, -1e300), f"track {k} goes back in time at {e}"
    last[k] = e["ts"]
    if e["ph"] in "be":
        spans.setdefault(e["id2"]["local"], {}).setdefault(e["pid"], {})[e["ph"]] = e["ts"]
assert len(spans) >= 60, len(spans)
for i, by in spans.items():
    assert set(by) == {0, 1}, (i, by)
    lo = max(by[r]["b"] for r in by)
    hi = min(by[r]["e"] for r in by)
    assert lo <= hi, f"bucket {i}: ranks do not overlap: {by}"
PY

# 1b. train.trace_detail=layer under tensor parallelism: each forward and
#     backward is tiled by its regions (embedding, every layer, head), and
#     the tensor-parallel collectives are spans inside the layers
"$YOKE" launch -n 2 --port 0 -- $JOB --set train.steps=10 --set parallel.tensor=2 --set train.trace=$tmp/l.json \
  --set train.trace_detail=layer $HB > $tmp/l.log 2>&1 || fail "layer detail job: $(tail -3 $tmp/l.log)"
python3 - "$tmp" <<'PY' && pass "trace_detail=layer: regions tile forward/backward within 1%, tp collectives inside layers" \
  || fail "layer detail"
import json, sys
ev = json.load(open(sys.argv[1] + "/l.rank1.json"))["traceEvents"]
xs = [e for e in ev if e.get("ph") == "X"]
layers = {e["args"]["layer"] for e in xs if e["name"] == "forward layer"}
assert layers == {0, 1}, layers  # tiny has 2 layers
for op, parts in (("forward", ("forward embed", "forward layer", "forward head")),
                  ("backward", ("backward head", "backward layer", "backward embed"))):
    spans = [e for e in xs if e["name"] == op]
    assert len(spans) == 10, (op, len(spans))
    cov = []
    for s in spans:
        t0, t1 = s["ts"], s["ts"] + s["dur"]
        kids = [e for e in xs if e["name"] in parts and e["ts"] >= t0 and e["ts"] + e["dur"] <= t1 + 0.001]
        assert len(kids) == 4, (op, [k["name"] for k in kids])
        cov.append(sum(k["dur"] for k in kids) / s["dur"])
    cov.sort()
    # forward's data loading is outside its regions; backward is all regions
    assert cov[len(cov) // 2] > (0.95 if op == "forward" else 0.99), (op, cov)
tp = [e for e in xs if e["name"].startswith("tp ")]
ls = [e for e in xs if e["name"].endswith(" layer")]
assert tp and all(e["args"]["bytes"] > 0 for e in tp), len(tp)
inside = sum(any(l["ts"] <= e["ts"] and e["ts"] + e["dur"] <= l["ts"] + l["dur"] + 0.001 for l in ls) for e in tp)
assert inside >= len(tp) // 2, (inside, len(tp))
PY

# 1c. a pipeline of 2 stages at train.trace_detail=kernel: every send's
#     flow arrow lands on the other rank's receive, after it leaves on the
#     merged clock (within the alignment error); kernel spans carry a shape
#     and the layer of the region around them and tile those regions; trace
#     top lists the operators (kernel, shape, layer)
"$YOKE" launch -n 2 --port 0 -- $JOB --set train.steps=10 --set parallel.pipeline=2 --set train.grad_accum=4 \
  --set train.trace=$tmp/p.json --set train.trace_detail=kernel $HB > $tmp/p.log 2>&1 || fail "pipeline job: $(tail -3 $tmp/p.log)"
"$YOKE" trace merge --out $tmp/pm.json $tmp/p.rank0.json $tmp/p.rank1.json > /dev/null 2>&1 || fail "pipeline merge"
python3 - "$tmp" <<'PY' && pass "pipeline: 80 messages, each arrow from a send to a receive on the other rank, in time order" \
  || fail "pipeline flows"
import json, sys
d = json.load(open(sys.argv[1] + "/pm.json"))
err_us = d["metadata"]["max_clock_error_ns"] / 1e3
ev = d["traceEvents"]
ends = {}
for e in ev:
    if e.get("ph") in ("s", "f"):
        assert (e["name"], e["ph"]) not in ends.get(e["id"], {}), f"flow id {e['id']} used twice"
        ends.setdefault(e["id"], {})[(e["name"], e["ph"])] = e
# 10 steps x 4 micro-batches x (activations + gradients)
assert len(ends) == 80, len(ends)
xs = [e for e in ev if e.get("ph") == "X"]
def span_at(e, names):
    return [x for x in xs if x["pid"] == e["pid"] and x["tid"] == e["tid"] and x["name"] in names
            and x["ts"] <= e["ts"] <= x["ts"] + x["dur"]]
for i, by in ends.items():
    assert len(by) == 2, (i, by)
    (n0, _), (n1, _) = by
    assert n0 == n1, (i, by)
    s, f = by[(n0, "s")], by[(n0, "f")]
    assert s["pid"] != f["pid"], f"flow {i} stays on rank {s['pid']}"
    assert f["ts"] >= s["ts"] - err_us, f"flow {i} lands {s['ts'] - f['ts']:.1f} us before it leaves (error {err_us} us)"
    kind = n0.split()[1]
    assert span_at(s, {"send " + kind}) and span_at(f, {"recv " + kind}), f"flow {i} is not bound to its send/receive"
PY
python3 - "$tmp" <<'PY' && pass "trace_detail=kernel: kernels with shape and layer tile the model's regions" || fail "kernel spans"
import json, sys
for r in (0, 1):
    xs = [e for e in json.load(open(f"{sys.argv[1]}/p.rank{r}.json"))["traceEvents"] if e.get("ph") == "X"]
    ks = [e for e in xs if e["cat"] == "kernel"]
    assert any(k["name"] == "gemm" and len(k["args"]["shape"].split("x")) == 3 for k in ks), r
    regions = [e for e in xs if e["name"].endswith((" embed", " layer", " head"))]
    cover = []
    for g in regions:
        inside = [k for k in ks if g["ts"] <= k["ts"] and k["ts"] + k["dur"] <= g["ts"] + g["dur"] + 0.001]
        want = g.get("args", {}).get("layer", -1 if g["name"].endswith("embed") else 2)  # tiny: 2 layers
        assert inside and all(k["args"]["layer"] == want for k in inside), (g, inside[:2])
        cover.append(sum(k["dur"] for k in inside) / g["dur"])
    cover.sort()
    assert cover[len(cover) // 2] > 0.95, f"rank {r}: kernels cover the median region {cover[len(cover) // 2]:.3f}"
PY
top=$("$YOKE" trace top $tmp/pm.json)
echo "$top" | grep -A2 "^hottest operators (kernel, shape, layer):" | grep -qE "kernel +[a-z_0-9]+ +\{\"bytes\":[0-9]+,\"layer\":-?[0-9]+,\"shape\":\"[0-9x]+\"\}" \
  && pass "trace top: $(echo "$top" | grep -A2 '^hottest operators' | tail -1 | tr -s ' ')" || fail "trace top operators: $top"

# 2. a window: the steps 5-9 as the step lines number them
"$YOKE" launch -n 2 --port 0 -- $JOB --set train.steps=12 --set train.trace=$tmp/w-{rank}.json \
  --set train.trace_steps=5-9 $HB > $tmp/w.log 2>&1
python3 - "$tmp" <<'PY' && pass "train.trace_steps=5-9 records steps 5..9 only, in {rank} files" || fail "window: $(tail -3 $tmp/w.log)"
import json, sys
for r in (0, 1):
    d = json.load(open(f"{sys.argv[1]}/w-{r}.json"))
    steps = sorted(e["args"]["step"] for e in d["traceEvents"] if e.get("ph") == "X" and e["name"] == "step")
    assert steps == [5, 6, 7, 8, 9], steps
PY

# 3. a bad window is one error line, exit 2
err=$("$YOKE" train --set data.train=$tmp/data/train_*.bin --set train.trace=$tmp/x.json --set train.trace_steps=5-2 2>&1 >/dev/null)
rc=$?
[ $rc = 2 ] && [ "$(echo "$err" | wc -l)" = 1 ] && echo "$err" | grep -q "train.trace_steps=5-2" \
  && pass "train.trace_steps=5-2: exit 2, one line: $err" || fail "bad window: exit $rc: $err"

# 4. a straggler: rank 1 sleeps 40 ms per step
out=$tmp/slow.log
YK_TEST_DELAY_RANK=1:40 "$YOKE" launch -n 2 --port $YK_PORT -- $JOB --set train.steps=60 --set train.trace=$tmp/s.json $HB \
  > "$out" 2>&1 &
L=$!
port=$YK_PORT
st=""
for i in $(seq 50); do
  st=$("$YOKE" status --coord 127.0.0.1:$port 2>/dev/null)
  echo "$st" | grep -q "^slowest rank 1: compute" && break
  sleep 0.1
done
echo "$st" | grep -qE "^slowest rank 1: compute [0-9.]+ ms per step, \+[0-9]+% against the median rank" \
  && pass "yoke status: $(echo "$st" | grep slowest)" || fail "yoke status does not name rank 1: $st"
wait $L
n=$(grep -c "coordinator: straggler: rank 1 computes" "$out")
[ "$n" = 1 ] && pass "one coordinator WARN names rank 1: $(grep -o 'straggler: rank 1 .*' "$out" | head -1)" \
  || fail "straggler warnings naming rank 1: $n; $(grep -i straggl "$out" | head -3)"
top=$("$YOKE" trace top --json $tmp/s.rank0.json $tmp/s.rank1.json)
echo "$top" | python3 -c 'import json,sys; t=json.load(sys.stdin); assert t["slowest_rank"]["rank"] == 1 and t["slowest_rank"]["excess"] > 0.2, t["slowest_rank"]' \
  && pass "trace top --json names rank 1 the slowest" || fail "trace top: $top"
"$YOKE" trace top $tmp/s.rank0.json $tmp/s.rank1.json | grep -q "^slowest rank: 1," && pass "trace top table" \
  || fail "trace top table"
finish
