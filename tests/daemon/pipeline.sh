#!/usr/bin/env bash
# Pipeline parallelism with real processes (yoke launch, libfabric):
#  - PP2 (3 blocks, uneven) x grad_accum 4 against one rank on the same
#    global batch: per-step losses within 1e-5 relative (bitwise is not
#    promised: the tied embedding's gradient is summed in another order);
#  - kill -9 of the last stage mid-step, with the coordinator's heartbeat
#    timeout far away: the first stage's receive ends within the channel's
#    deadline (comm.timeout_ms) naming stage 1, no hang, nothing left behind;
#  - a hung stage (SIGSTOP, not killed: its sockets stay open): the middle
#    stage of PP3 with the heartbeat timeout far away (both neighbours'
#    receives time out naming it; the coordinator names the rank whose
#    heartbeats stopped), and rank 1 of PP2 with the heartbeat timeout first
#    (the coordinator's verdict names it).
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/lib-train.sh"
cat > "$tmp/job.yaml" <<YAML
model: {name: tiny, layers: 3}
data: {train: "$tmp/data/train_*.bin", val: "$tmp/data/val_*.bin"}
train: {micro_batch: 2, seq_len: 32, steps: 8, threads: 1, val_batches: 2, grad_accum: 4}
optim: {lr: 1e-3, warmup_steps: 2, weight_decay: 0.1}
comm: {timeout_ms: 20000, transport: libfabric}
YAML
pp() { "$YOKE" launch -n 2 -- train "$tmp/job.yaml" --set parallel.pipeline=2 "$@" | sed 's/^\[r[0-9]*\] //'; }

"$YOKE" train "$tmp/job.yaml" --json > "$tmp/one.json" 2> "$tmp/one.log" && pass "1 rank x accum 4" \
  || fail "1 rank: $(tail -2 "$tmp/one.log")"
pp --json > "$tmp/pp.json" 2> "$tmp/pp.log" && pass "PP2 (yoke launch) x accum 4" \
  || fail "PP2: $(grep ERROR "$tmp/pp.log" | head -2)"
grep -q "pipeline: 1f1b, 2 stages x 1 chunks, 4 micro-batches" "$tmp/pp.log" && pass "PP2 describes its schedule" \
  || fail "no pipeline line: $(grep -i pipeline "$tmp/pp.log" | head -2)"
compare_steps "PP2 vs 1 rank, 8 steps" "$tmp/pp.json" "$tmp/one.json" 1 8 2e-5 1e-4


# ---- kill -9 of the last stage in the middle of the pipeline
cat > "$tmp/big.yaml" <<YAML
model: {name: small}
data: {train: "$tmp/data/train_*.bin"}
train: {micro_batch: 8, seq_len: 128, steps: 100000, threads: 1, grad_accum: 4}
parallel: {pipeline: 2}
comm: {timeout_ms: 3000, transport: libfabric}
coord: {heartbeat_timeout_ms: 60000}
YAML
# rank_pid RANK LOG TRIES: the pid of the job's rank RANK once LOG shows step 2
# (TRIES x 0.1 s at most); empty if it never got there
rank_pid() {
  local pid="" i p
  for i in $(seq 1 "$3"); do
    for p in $(pgrep -f "train $tmp/big.yaml"); do
      tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx "YOKE_RANK=$1" && pid=$p
    done
    [ -n "$pid" ] && grep -q "step 2/" "$2" && break
    sleep 0.1
  done
  echo "$pid"
}
"$YOKE" launch -n 2 -- train "$tmp/big.yaml" > "$tmp/kill.log" 2>&1 &
lpid=$!
victim=$(rank_pid 1 "$tmp/kill.log" 200)
if [ -z "$victim" ]; then fail "the kill test's stage 1 never started: $(tail -3 "$tmp/kill.log")"; kill $lpid; else
  kill -9 "$victim"; t0=$(date +%s%N)
  wait $lpid; rc=$?
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  [ $ms -le 8000 ] && pass "job ended ${ms} ms after kill -9 (comm.timeout_ms 3000)" || fail "job took ${ms} ms to end"
  grep -q "\[r0\].*\(stage 1\|rank 1\)" "$tmp/kill.log" && pass "rank 0 names stage 1 / rank 1" \
    || fail "rank 0 did not name the dead stage: $(grep '\[r0\]' "$tmp/kill.log" | tail -3)"
  [ $rc -ne 0 ] && pass "launcher exits non-zero ($rc)" || fail "launcher exit 0 after a kill"
  sleep 0.5
  left=$(pgrep -f "train $tmp/big.yaml" | wc -l)
  [ "$left" = 0 ] && pass "no rank left behind" || fail "$left processes left"
fi

# ---- DP2 x PP2: kill -9 of rank 2 (stage 1 of dp replica 0): every other
# rank ends naming rank 2 (the coordinator's abort reaches the engine's
# channels, which are split from the pipeline group it aborts)
"$YOKE" launch -n 4 -- train "$tmp/big.yaml" > "$tmp/kill4.log" 2>&1 &
lpid=$!
victim=$(rank_pid 2 "$tmp/kill4.log" 300)
if [ -z "$victim" ]; then fail "DP2 x PP2: rank 2 never started: $(tail -3 "$tmp/kill4.log")"; kill $lpid; else
  kill -9 "$victim"; t0=$(date +%s%N)
  wait $lpid; rc=$?
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  [ $ms -le 8000 ] && pass "DP2 x PP2: job ended ${ms} ms after kill -9 of rank 2" || fail "DP2 x PP2: job took ${ms} ms"
  for r in 0 1 3; do
    grep -q "\[r$r\].*\(ERROR\|stopping\).*rank 2" "$tmp/kill4.log" && pass "DP2 x PP2: rank $r names rank 2" \
      || fail "DP2 x PP2: rank $r did not name rank 2: $(grep "\[r$r\]" "$tmp/kill4.log" | grep -v INFO | tail -2)"
  done
  [ $rc -ne 0 ] && pass "DP2 x PP2: launcher exits non-zero" || fail "DP2 x PP2: launcher exit 0 after a kill"
  sleep 0.5
  left=$(pgrep -f "train $tmp/big.yaml" | wc -l)
  [ "$left" = 0 ] && pass "DP2 x PP2: no rank left behind" || fail "DP2 x PP2: $left processes left"
fi

# ---- a hung stage: SIGSTOP (sockets stay open, nothing is closed)
# stop_test NAME RANKS VICTIM LIMIT_MS yoke-train-args...: SIGSTOP rank VICTIM
# at step 2; every other rank names it in an ERROR line, the job ends within
# LIMIT_MS, non-zero, and no rank is left (the launcher SIGKILLs the stopped one)
stop_test() {
  local name=$1 n=$2 v=$3 limit=$4; shift 4
  "$YOKE" launch -n "$n" --grace-ms 500 -- train "$tmp/big.yaml" "$@" > "$tmp/$name.log" 2>&1 &
  local lpid=$! victim rc ms r t0
  victim=$(rank_pid "$v" "$tmp/$name.log" 300)
  if [ -z "$victim" ]; then fail "$name: rank $v never started: $(tail -3 "$tmp/$name.log")"; kill $lpid; return; fi
  kill -STOP "$victim"; t0=$(date +%s%N)
  wait $lpid; rc=$?
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  kill -CONT "$victim" 2>/dev/null
  [ $ms -le "$limit" ] && pass "$name: job ended ${ms} ms after SIGSTOP of rank $v" || fail "$name: job took ${ms} ms"
  for r in $(seq 0 $((n - 1))); do
    [ "$r" = "$v" ] && continue
    grep -q "\[r$r\].*ERROR.*rank $v" "$tmp/$name.log" && pass "$name: rank $r names rank $v" \
      || fail "$name: rank $r did not name rank $v: $(grep "\[r$r\]" "$tmp/$name.log" | grep -v INFO | tail -2 | cut -c1-300)"
  done
  tail -1 "$tmp/$name.log" | grep -q "job failed .*rank $v " && pass "$name: the launcher's last line names rank $v" \
    || fail "$name: last line: $(tail -1 "$tmp/$name.log" | cut -c1-300)"
  [ $rc -ne 0 ] && pass "$name: launcher exits non-zero ($rc)" || fail "$name: launcher exit 0 after a SIGSTOP"
  sleep 0.5
  left=$(pgrep -f "train $tmp/big.yaml" | wc -l)
  [ "$left" = 0 ] && pass "$name: no rank left behind" || fail "$name: $left processes left"
}
# comm.timeout_ms 3000 first (heartbeat timeout 60 s): 3 s + 0.5 s grace + slack
stop_test "PP3 SIGSTOP rank 1" 3 1 9000 --set parallel.pipeline=3
# the heartbeat timeout first (2 s, comm.timeout_ms 20 s)
stop_test "PP2 SIGSTOP rank 1" 2 1 9000 --set coord.heartbeat_timeout_ms=2000 --set comm.timeout_ms=20000
finish
