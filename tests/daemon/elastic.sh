#!/usr/bin/env bash
# Elastic training with real processes (docs/elasticity.md):
#  - kill -9 storm: a job of 4 ranks (checkpointing every 7 steps) loses a random rank at a random moment,
#    again and again (YK_ELASTIC_KILLS times, default 20), each time grown
#    back by `yoke launch --add 1`, so kills also land during a re-form and
#    during a join. The job finishes; every loss it reports equals the 1-rank
#    run of the same global batch (grad_accum 12 = 4 ranks x 3 = 3 ranks x 4)
#    within 1e-5 relative; the ledger shows every data window exactly once,
#    in order; the surviving ranks end with identical weights; no process
#    and no shared-memory segment is left behind;
#  - a drain (`yoke status --drain`) and SIGTERM to one rank: it leaves with
#    exit 0 at a boundary, the others go on, the loss still equals 1 rank;
#  - below elastic.min_ranks: checkpoint and exit 75; the resumed job ends
#    equal to 1 rank;
#  - the coordinator (the launcher) killed: the ranks checkpoint and exit 75;
#  - refusals, each one line: elastic under mpirun, buddy with optim.zero=1,
#    a join to a job that is not elastic, a join beyond elastic.max_ranks.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/lib-train.sh"
KILLS=${YK_ELASTIC_KILLS:-20}
cat > "$tmp/job.yaml" <<YAML
model: {name: tiny}
data: {train: "$tmp/data/train_*.bin"}
train: {micro_batch: 2, seq_len: 32, steps: 100000, threads: 1, grad_accum: 3}
optim: {lr: 1e-3, warmup_steps: 2}
comm: {timeout_ms: 20000}
coord: {heartbeat_ms: 200, heartbeat_timeout_ms: 2000}
elastic: {enabled: true, max_ranks: 4}
YAML
shm_count() { ls /dev/shm 2>/dev/null | grep -c '^yk' ; }
shm0=$(shm_count)
pids_of_job() { pgrep -f "yoke train $tmp/job.yaml" || true; }

# check_losses JSON... : every reported step loss equals r1's within 1e-5
# relative (a step redone after a failure may be reported twice: both must).
check_losses() { check_losses_ref "$tmp/r1.json" "$@"; }
check_losses_ref() {
  python3 - "$@" <<'EOF'
import json, sys
def steps(path):
    out = []
    for line in open(path):
        line = line.strip()
        if line.startswith('[r'):
            line = line.split('] ', 1)[1] if '] ' in line else ''
        try: o = json.loads(line)
        except ValueError: continue
        if 'loss' in o and 'step' in o and 'done' not in o: out.append((o['step'], o['loss']))
    return out
ref = dict(steps(sys.argv[1]))
seen, worst = 0, 0.0
for p in sys.argv[2:]:
    for s, l in steps(p):
        if s not in ref: print("step", s, "not in the reference"); sys.exit(1)
        worst = max(worst, abs(l - ref[s]) / abs(ref[s])); seen += 1
print(f"{seen} reported losses, worst relative difference {worst:.2e}")
sys.exit(0 if seen and worst <= 1e-5 else 1)
EOF
}
# check_ledger FILE STEPS: the last line of each step 1..STEPS tiles the
# windows 0, 1, 2, ... without gap or overlap.
check_ledger() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
last = {}
for line in open(sys.argv[1]):
    o = json.loads(line); last[o['step']] = o
n = int(sys.argv[2]); q = 0
for s in range(1, n + 1):
    if s not in last: print("step", s, "missing"); sys.exit(1)
    o = last[s]
    if o['first'] != q: print("step", s, "starts at window", o['first'], "expected", q); sys.exit(1)
    q += o['count']
print(f"{n} steps, windows 0..{q - 1} each once, epochs {sorted({o['epoch'] for o in last.values()})}, "
      f"worlds {sorted({o['world'] for o in last.values()})}")
EOF
}

# ---- the kill storm --------------------------------------------------------
STEPS=$((100 + KILLS * 30)) # long enough that the kills end before the job does
REF=$((STEPS > 160 ? STEPS : 160)) # the reference also serves the drain below
"$YOKE" train "$tmp/job.yaml" --json --set train.steps=$REF --set train.grad_accum=12 --set elastic.enabled=false \
  > "$tmp/r1.json" 2> "$tmp/r1.log" || fail "1-rank reference: $(tail -2 "$tmp/r1.log")"
export YK_TEST_DELAY_RANK=-1:40
# checkpoints every 7 steps: kills also land during a save (buddy mode does
# not read them, but a save cut short must not break the next)
STORM="--set elastic.ledger=$tmp/ledger --set ckpt.dir=$tmp/ckst --set ckpt.every=7 --set ckpt.keep=2"
"$YOKE" launch -n 4 -- train "$tmp/job.yaml" --json --set train.steps=$STEPS $STORM \
  > "$tmp/storm.json" 2> "$tmp/storm.log" &
launcher=$!
sleep 2
job=$(grep -ao 'job [0-9a-f]\{16\}' "$tmp/storm.json" | head -1 | cut -c5-)
k=0 adds=0
while [ $k -lt "$KILLS" ] && kill -0 $launcher 2>/dev/null; do
  mapfile -t ps < <(pids_of_job)
  [ ${#ps[@]} -ge 2 ] || { sleep 0.2; continue; }
  victim=${ps[$((RANDOM % ${#ps[@]}))]}
  # a random moment: anywhere in a step, a bucket's reduction, a re-form or a join
  sleep "0.$((RANDOM % 9))$((RANDOM % 10))"
  kill -9 "$victim" 2>/dev/null && k=$((k + 1))
  # grow back (sometimes at once, so that the next kill meets a join or a re-form)
  [ $((RANDOM % 2)) = 0 ] && sleep 0.$((RANDOM % 10))
  "$YOKE" launch --add 1 --job "$job" "$tmp/job.yaml" --json --set train.steps=$STEPS $STORM \
    > "$tmp/add$adds.json" 2> "$tmp/add$adds.log" &
  adds=$((adds + 1))
  sleep 0.$((5 + RANDOM % 5))
done
wait $launcher; rc=$?
for ((i = 0; i < 200; i++)); do [ -z "$(pids_of_job)" ] && break; sleep 0.2; done
wait
unset YK_TEST_DELAY_RANK
[ "$rc" = 0 ] && [ "$k" = "$KILLS" ] && pass "kill storm: $k kills of random ranks at random moments, $adds joins; the job finished" \
  || fail "kill storm: launcher exit $rc after $k of $KILLS kills: $(grep -h ERROR "$tmp/storm.log" | head -3)"
reforms=$(cat "$tmp"/storm.json "$tmp"/add*.json | grep -c '"reform": true')
out=$(check_losses "$tmp/storm.json" "$tmp"/add*.json) && pass "kill storm: losses equal 1 rank x accum 12 ($out; $reforms re-forms)" \
  || fail "kill storm: losses: $out"
out=$(check_ledger "$tmp/ledger" $STEPS) && pass "kill storm: ledger: $out" || fail "kill storm: ledger: $out"
sums=$(cat "$tmp"/storm.json "$tmp"/add*.json | sed 's/^\[r[0-9]*\] //' | grep '"done": true' |
  sed 's/.*"params_checksum": "\([0-9a-f]*\)".*/\1/' | sort -u)
[ "$(echo "$sums" | wc -l)" = 1 ] && [ -n "$sums" ] && pass "kill storm: every surviving rank ends with weights $sums" \
  || fail "kill storm: survivors' checksums differ: $sums"
lost=$(grep -h "no completed step lost" "$tmp"/storm.log "$tmp"/add*.log | wc -l)
[ "$lost" -gt 0 ] && ! grep -hq "steps lost" "$tmp"/storm.log && pass "kill storm: no completed step lost ($lost re-form lines)" \
  || fail "kill storm: re-form lines: $lost"
[ -z "$(pids_of_job)" ] && pass "kill storm: no process left" || fail "kill storm: processes left: $(pids_of_job)"
last=$(ls "$tmp/ckst" | grep '^step-' | tail -1)
out=$("$YOKE" ckpt verify "$tmp/ckst/$last" 2>&1) && pass "kill storm: the last checkpoint verifies ($last)" \
  || fail "kill storm: checkpoint $last: $out"

# ---- a death during the start-up (rendezvous, communicators, engine open) -----------
for delay in 0.3 0.6 0.9; do
  YK_TEST_DELAY_RANK=-1:30 "$YOKE" launch -n 4 -- train "$tmp/job.yaml" --json --set train.steps=60 \
    > "$tmp/start.json" 2> "$tmp/start.log" &
  launcher=$!
  sleep $delay
  kill -9 "$(pids_of_job | tail -1)" 2>/dev/null
  wait $launcher; rc=$?
  out=$(check_losses "$tmp/start.json") && [ "$rc" = 0 ] \
    && pass "a rank killed ${delay} s after the launch: the others start at the new epoch and finish ($out)" \
    || { fail "killed at ${delay} s: exit $rc, $out: $(grep -h 'ERROR' "$tmp/start.log" | head -3)"; break; }
done

# ---- drain and SIGTERM ---------------------------------------------------------
export YK_TEST_DELAY_RANK=-1:30
"$YOKE" launch -n 4 --port $((YK_PORT + 1)) -- train "$tmp/job.yaml" --json --set train.steps=160 --set elastic.ledger="$tmp/ledger2" \
  > "$tmp/drain.json" 2> "$tmp/drain.log" &
launcher=$!
sleep 2
"$YOKE" status --coord 127.0.0.1:$((YK_PORT + 1)) --drain 2 > "$tmp/status.out" 2>&1 && grep -q "leaves at the next step boundary" "$tmp/status.out" \
  && pass "yoke status --drain 2: $(cat "$tmp/status.out")" || fail "status --drain: $(cat "$tmp/status.out")"
sleep 1.5
"$YOKE" status --coord 127.0.0.1:$((YK_PORT + 1)) > "$tmp/status2.out" 2>&1
grep -q "epoch 2 .* s  *rank 2 (host .*) drained by" "$tmp/status2.out" && grep -q "lost to recovery" "$tmp/status2.out" \
  && pass "yoke status lists the change with its cause and duration: $(grep 'epoch 2 ' "$tmp/status2.out")" \
  || fail "status after the drain: $(cat "$tmp/status2.out")"
victim=$(pids_of_job | head -2 | tail -1) # a rank that is not draining already
kill -TERM "$victim"
wait $launcher; rc=$?
unset YK_TEST_DELAY_RANK
left=$(grep -c "leaves at the next step boundary" "$tmp/drain.log")
world=$(sed 's/^\[r[0-9]*\] //' "$tmp/drain.json" | grep '"done": true' | head -1 | sed 's/.*"world": \([0-9]*\).*/\1/')
[ "$rc" = 0 ] && [ "$left" -ge 2 ] && [ "$world" = 2 ] \
  && pass "a drain and a SIGTERM: two ranks left at a boundary, the job finished on 2" \
  || fail "drain: exit $rc, $left leave lines: $(grep -h 'launch:\|ERROR' "$tmp/drain.log" | tail -4)"
grep -q "exited with code" "$tmp/drain.log" && fail "drain: a drained rank exited non-zero: $(grep 'exited with code' "$tmp/drain.log")" \
  || pass "drained ranks exit 0"
out=$(check_losses "$tmp/drain.json") && pass "drain: losses equal 1 rank ($out)" || fail "drain: $out"
out=$(check_ledger "$tmp/ledger2" 160) && pass "drain: ledger: $out" || fail "drain: ledger: $out"

# ---- below elastic.min_ranks: checkpoint, exit 75, resume ------------------
export YK_TEST_DELAY_RANK=-1:30
"$YOKE" launch -n 4 -- train "$tmp/job.yaml" --json --set train.steps=60 --set elastic.min_ranks=4 \
  --set ckpt.dir="$tmp/ck" > "$tmp/min.json" 2> "$tmp/min.log" &
launcher=$!
sleep 2
kill -9 "$(pids_of_job | tail -1)"
wait $launcher; rc=$?
unset YK_TEST_DELAY_RANK
[ "$rc" = 75 ] && grep -q "below elastic.min_ranks=4" "$tmp/min.log" && ls "$tmp/ck" | grep -q step \
  && pass "below min_ranks: checkpoint and exit 75" || fail "below min_ranks: exit $rc: $(grep -h 'ERROR\|launch:' "$tmp/min.log" | tail -3)"
"$YOKE" launch -n 4 -- train "$tmp/job.yaml" --json --set train.steps=60 --set ckpt.dir="$tmp/ck" --resume latest \
  > "$tmp/min2.json" 2> "$tmp/min2.log" && out=$(check_losses "$tmp/min.json" "$tmp/min2.json") \
  && pass "below min_ranks: the resumed job equals 1 rank ($out)" || fail "below min_ranks resume: $(grep -h ERROR "$tmp/min2.log" | head -2) $out"

# ---- elastic.redundancy=checkpoint: tensor parallelism and ZeRO-1 ---------------------
# 4 ranks = dp 2 x tp 2 (ZeRO-1). A kill leaves 3: the largest valid layout
# is dp 3 x tp 1, re-opened from the last checkpoint (resharded TP2 -> TP1),
# the steps since redone; a join brings back dp 2 x tp 2. The global batch
# (3 x 2 = 6 micro-batches) is the 1-rank run's grad_accum 6.
"$YOKE" train "$tmp/job.yaml" --json --set train.steps=60 --set train.grad_accum=6 --set elastic.enabled=false \
  > "$tmp/c1.json" 2> "$tmp/c1.log" || fail "checkpoint mode: 1-rank reference: $(tail -2 "$tmp/c1.log")"
export YK_TEST_DELAY_RANK=-1:50
CK="--set parallel.tensor=2 --set optim.zero=1 --set elastic.redundancy=checkpoint --set ckpt.every=5 --set ckpt.dir=$tmp/ck3"
"$YOKE" launch -n 4 -- train "$tmp/job.yaml" --json --set train.steps=60 $CK > "$tmp/c4.json" 2> "$tmp/c4.log" &
launcher=$!
sleep 2.5
job=$(grep -ao 'job [0-9a-f]\{16\}' "$tmp/c4.json" | head -1 | cut -c5-)
kill -9 "$(pids_of_job | sed -n 2p)"
sleep 1.5
"$YOKE" launch --add 1 --job "$job" "$tmp/job.yaml" --json --set train.steps=60 $CK > "$tmp/c4add.json" 2> "$tmp/c4add.log"
wait $launcher; rc=$?
unset YK_TEST_DELAY_RANK
grep -q "as dp 3 x tp 1 x pp 1; re-opened from the checkpoint" "$tmp/c4.log" && grep -q "as dp 2 x tp 2 x pp 1; re-opened" "$tmp/c4.log" \
  && [ "$rc" = 0 ] && pass "checkpoint mode: dp2 x tp2 -> (kill) dp3 x tp1 -> (join) dp2 x tp2, each from the last checkpoint" \
  || fail "checkpoint mode: exit $rc: $(grep -h 'ERROR\|re-opened' "$tmp/c4.log" "$tmp/c4add.log" | head -4)"
out=$(check_losses_ref "$tmp/c1.json" "$tmp/c4.json" "$tmp/c4add.json") && pass "checkpoint mode: losses equal 1 rank ($out)" \
  || fail "checkpoint mode: losses: $out"

# ---- the coordinator dies: the ranks checkpoint and exit 75 ----------------------
export YK_TEST_DELAY_RANK=-1:30
"$YOKE" launch -n 3 -- train "$tmp/job.yaml" --json --set train.steps=2000 --set ckpt.dir="$tmp/ck2" \
  > "$tmp/coord.json" 2> "$tmp/coord.log" &
launcher=$!
sleep 2
mapfile -t ranks < <(pids_of_job)
kill -9 $launcher
codes=""
for p in "${ranks[@]}"; do
  for ((i = 0; i < 100; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
done
unset YK_TEST_DELAY_RANK
[ -z "$(pids_of_job)" ] && ls "$tmp/ck2" 2>/dev/null | grep -q step \
  && pass "the coordinator killed: the ${#ranks[@]} ranks checkpointed and exited" \
  || fail "coordinator killed: left $(pids_of_job), checkpoints: $(ls "$tmp/ck2" 2>&1)"
pkill -9 -f "yoke train $tmp/job.yaml" 2>/dev/null

# ---- refusals ----------------------------------------------------------------
out=$($MPIRUN -np 2 "$YOKE" train "$tmp/job.yaml" --set train.steps=2 --set coord.port=$YK_PORT 2>&1)
echo "$out" | grep -q "elastic.enabled=true cannot work under mpirun" && pass "elastic under mpirun: one error line" \
  || fail "elastic under mpirun: $out"
out=$("$YOKE" launch -n 2 -- train "$tmp/job.yaml" --set train.steps=2 --set optim.zero=1 2>&1)
echo "$out" | grep -q "optim.zero=1" && pass "buddy with optim.zero=1 refused: one line" || fail "buddy + zero 1: $out"
"$YOKE" launch -n 2 -- train "$tmp/job.yaml" --set train.steps=400 --set elastic.enabled=false \
  > "$tmp/ne.out" 2> "$tmp/ne.log" &
launcher=$!
sleep 1.5
job=$(grep -ao 'job [0-9a-f]\{16\}' "$tmp/ne.out" | head -1 | cut -c5-)
out=$("$YOKE" launch --add 1 --job "$job" "$tmp/job.yaml" --set train.steps=400 2>&1)
echo "$out" | grep -q "this job is not elastic" && pass "a join to a job that is not elastic: refused" || fail "join non-elastic: $out"
wait $launcher
# a failed run leaves its logs for a look afterwards (CI runs on a fresh clone)
[ "$YK_FAILED" != 0 ] && cp -r "$tmp" "/tmp/yk_elastic_failed.$$" 2>/dev/null && echo "logs kept in /tmp/yk_elastic_failed.$$"
[ "$(shm_count)" -le "$shm0" ] && pass "no shared-memory segment left ($(shm_count) before: $shm0)" \
  || fail "shared memory left: $(ls /dev/shm | grep '^yk')"
finish
