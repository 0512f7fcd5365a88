#!/usr/bin/env bash
# The local launcher (`yoke launch`) with the embedded coordinator in the
# launcher: a clean job, a failing rank, kill -9 of a rank, signal
# forwarding, `yoke status` (+ --json, wrong secret), garbage at the
# coordinator's port while the job goes on, and /metrics over HTTP.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/lib-daemon.sh"
export YOKE_SECRET=$(openssl rand -hex 32)
HB="--set coord.heartbeat_ms=200 --set coord.heartbeat_timeout_ms=2000"

# 1. a clean job of 3 ranks, output prefixed with the rank; the launcher's
#    own summary is its last line, on stdout (diagnostics go to stderr)
out=$YK_TMP/ok.log
"$YOKE" launch -n 3 -- $YK_WORKLOAD $HB > "$out" 2>&1; rc=$?
[ $rc = 0 ] && pass "launch -n 3 exits 0" || fail "launch -n 3 exit $rc: $(tail -5 "$out")"
"$YOKE" launch -n 2 -- $YK_WORKLOAD $HB > "$YK_TMP/ok.out" 2> "$YK_TMP/ok.err"
tail -1 "$YK_TMP/ok.out" | grep -qE "INFO  launch: job done in [0-9.]+ s: 20 steps, 20480 tokens, [0-9]+ tokens/s, final loss [0-9.]+; all 2 ranks finished$" \
  && ! grep -q "launch:" "$YK_TMP/ok.err" && pass "launcher's summary is the last line of stdout" \
  || fail "launcher summary: stdout $(tail -1 "$YK_TMP/ok.out"); stderr $(grep launch: "$YK_TMP/ok.err")"
for r in 0 1 2; do
  grep -q "^\[r$r\] " "$out" && pass "output of rank $r is prefixed [r$r]" || fail "no [r$r] lines"
done
grep -q "all 3 ranks registered" "$out" && pass "rendezvous of 3" || fail "no rendezvous line"

# 2. a rank that fails: the launcher exits with its code, the others stop
out=$YK_TMP/fail.log
t0=$(now_ms)
"$YOKE" launch -n 3 -- $YK_WORKLOAD_LONG $HB --fail-at 5 --fail-rank 1 --fail-code 7 > "$out" 2>&1; rc=$?
dt=$(( $(now_ms) - t0 ))
[ $rc = 7 ] && pass "first failure's code (7) is the launcher's" || fail "launcher exit $rc, wanted 7: $(tail -5 "$out")"
grep -q "rank 1 (host .*) failed with code 7" "$out" && pass "coordinator names the failed rank" || fail "no failure line"
[ $dt -lt 8000 ] && pass "failed job ended in ${dt} ms" || fail "failed job took ${dt} ms"

# 3. kill -9 of one rank: the others exit within heartbeat_timeout + 2 s,
#    naming it; nothing is left behind
out=$YK_TMP/kill.log
"$YOKE" launch -n 3 -- $YK_WORKLOAD_LONG $HB > "$out" 2>&1 &
L=$!
wait_for "all 3 ranks registered" "$out" 20 || fail "kill test: no rendezvous"
sleep 0.5
ranks=$(all_ranks $L)
victim=$(rank_pid $L 1)
if [ -n "$victim" ]; then
  t0=$(now_ms)
  kill -9 "$victim"
  wait $L; rc=$?
  dt=$(( $(now_ms) - t0 ))
  [ $dt -le 4000 ] && pass "others exited ${dt} ms after kill -9 (limit 4000)" || fail "exit took ${dt} ms after kill -9"
  [ $rc = 137 ] && pass "launcher reports the killed rank (137)" || fail "launcher exit $rc, wanted 137"
  tail -1 "$out" | grep -q "ERROR launch: job failed in .*: rank 1 was killed by signal 9 .*rank 1 (host .*) died: connection lost" \
    && pass "last line: rank 1 was killed, and the coordinator's why" || fail "last line: $(tail -1 "$out")"
  for r in 0 2; do
    grep -qE "^\[r$r\].*job aborted: rank 1 \(host $(hostname)" "$out" && pass "rank $r names dead rank 1 and its host" \
      || fail "rank $r does not name rank 1: $(grep "^\[r$r\]" "$out" | tail -2)"
    [ "$(grep -cE "^\[r$r\].* ERROR " "$out")" = 1 ] && pass "rank $r says it in one error line" \
      || fail "rank $r error lines: $(grep -E "^\[r$r\].* ERROR " "$out")"
  done
  pids_gone $ranks && pass "no rank process left behind" || fail "processes left: $(ps -o pid,args -p $ranks)"
else
  fail "kill test: cannot find rank 1's pid"; kill $L
fi

# 3b. a rank that stalls (SIGSTOP) past the heartbeat timeout: the others
#     exit 3 and the stalled one dies by the launcher's SIGKILL (137), yet
#     the root cause (rank 1 declared dead, no heartbeat) is the last line
#     and the exit code (3), not a victim's code
out=$YK_TMP/stall.log
"$YOKE" launch -n 2 --grace-ms 500 -- $YK_WORKLOAD_LONG $HB > "$out" 2>&1 &
L=$!
wait_for "all 2 ranks registered" "$out" 20 || fail "stall test: no rendezvous"
sleep 0.3
victim=$(rank_pid $L 1)
[ -n "$victim" ] && kill -STOP "$victim"
wait $L; rc=$?
[ -n "$victim" ] && kill -CONT "$victim" 2>/dev/null
[ $rc = 3 ] && tail -1 "$out" | grep -q "ERROR launch: job failed in .*: rank 1 (host .*) died: no heartbeat for" \
  && pass "stall: the root cause (rank 1, no heartbeat) is the last line and the exit code 3" \
  || fail "stall: exit $rc, last line: $(tail -1 "$out")"

# 4. signals are forwarded: SIGINT -> 130, SIGTERM -> checkpoint request -> 75;
#    a stop and a requeue are not failures (WARN, not "ERROR ... job failed")
for sig in INT:130 TERM:75; do
  s=${sig%:*} want=${sig#*:}
  out=$YK_TMP/sig$s.log
  "$YOKE" launch -n 2 -- $YK_WORKLOAD_LONG $HB > "$out" 2>&1 &
  L=$!
  wait_for "all 2 ranks registered" "$out" 20
  sleep 0.3
  ranks=$(all_ranks $L)
  kill -$s $L
  t0=$(now_ms)
  wait $L; rc=$?
  dt=$(( $(now_ms) - t0 ))
  [ $rc = $want ] && pass "SIG$s: launcher exits $want in ${dt} ms" || fail "SIG$s: exit $rc, wanted $want: $(tail -3 "$out")"
  pids_gone $ranks && pass "SIG$s: no rank left" || fail "SIG$s: ranks left"
  case $want in
    130) says="WARN  launch: job stopped after [0-9.]+ s by Interrupt \(exit 130\), no checkpoint" ;;
    75) says="WARN  launch: job checkpointed for requeue after [0-9.]+ s \(exit 75\)" ;;
  esac
  tail -1 "$out" | grep -qE "$says" && ! grep -q "ERROR" "$out" && pass "SIG$s: the last line says so, no ERROR" \
    || fail "SIG$s: last line $(tail -1 "$out"); $(grep ERROR "$out" | head -2)"
done

# 4b. a checkpoint request reaches every rank: SIGUSR1 to one rank, or
#     `yoke status --checkpoint`; `yoke status --stop` stops them all
for how in usr1 status-checkpoint status-stop; do
  out=$YK_TMP/req-$how.log
  "$YOKE" launch -n 3 -- $YK_WORKLOAD_LONG $HB > "$out" 2>&1 &
  L=$!
  wait_for "all 3 ranks registered" "$out" 20
  sleep 0.3
  ranks=$(all_ranks $L)
  port=$(launcher_port "$out")
  want=75
  case $how in
    usr1) kill -USR1 "$(rank_pid $L 1)" ;;
    status-checkpoint) "$YOKE" status --coord 127.0.0.1:$port --checkpoint > /dev/null 2>&1 ;;
    status-stop) "$YOKE" status --coord 127.0.0.1:$port --stop > /dev/null 2>&1; want=130 ;;
  esac
  t0=$(now_ms)
  wait $L; rc=$?
  dt=$(( $(now_ms) - t0 ))
  n=$(grep -cE "launch: rank [0-9] \(pid [0-9]+\) exited with code $want\$" "$out")
  [ $rc = $want ] && [ "$n" -ge 3 ] && pass "$how: all 3 ranks exit $want in ${dt} ms" \
    || fail "$how: exit $rc (want $want), $n ranks exited $want: $(tail -4 "$out")"
  pids_gone $ranks || fail "$how: ranks left behind"
done

# 5. observability and robustness while a job runs
mport=$(free_port)
out=$YK_TMP/obs.log
"$YOKE" launch -n 2 -- daemon-selftest --steps 200 --step-ms 25 $HB --set coord.metrics_port=$mport > "$out" 2>&1 &
L=$!
wait_for "all 2 ranks registered" "$out" 20
port=$(launcher_port "$out")
sleep 0.6
st=$("$YOKE" status --coord 127.0.0.1:$port 2>&1); rc=$?
if [ $rc = 0 ] && echo "$st" | grep -qE "^job [0-9a-f]{16} +epoch 1 +world 2 +alive 2" && [ "$(echo "$st" | grep -c ' alive ')" -ge 2 ]; then
  pass "yoke status lists the job and 2 alive members"
else fail "yoke status: rc $rc: $st"; fi
js=$("$YOKE" status --json --coord 127.0.0.1:$port 2>&1)
if echo "$js" | python3 -c 'import json,sys; j=json.load(sys.stdin); m=j["members"]; assert j["world"]==2 and len(m)==2 and all(x["state"]=="alive" and x["pid"]>0 and x["host"] and x["heartbeat_age_ms"]<2000 for x in m) and j["step"]>=1 and j["tokens_per_s"]>0, j' 2>"$YK_TMP/json.err"; then
  pass "status --json parses with members, heartbeat ages, step and tokens/s"
else fail "status --json: $js $(cat "$YK_TMP/json.err")"; fi
echo "0000000000000000000000000000000000000000000000000000000000000000" > "$YK_TMP/wrong.secret"
expect_fail 1 "status with the wrong secret is refused" "$YOKE" status --coord 127.0.0.1:$port --secret-file "$YK_TMP/wrong.secret"
expect_stderr "does not share our job secret" "$YOKE" status --coord 127.0.0.1:$port --secret-file "$YK_TMP/wrong.secret"
# a rank holding another secret cannot join: exit 2 with the reason, and the
# coordinator logs the stranger
YOKE_SECRET=$(openssl rand -hex 32) YOKE_RANK=1 YOKE_WORLD=2 YOKE_COORD=127.0.0.1:$port "$YOKE" daemon-selftest > "$YK_TMP/stranger.log" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "does not share our job secret" "$YK_TMP/stranger.log" && pass "a rank with the wrong secret is refused (exit 2)" \
  || fail "wrong-secret rank: exit $rc: $(tail -2 "$YK_TMP/stranger.log")"
# random bytes and truncated frames at the coordinator's port
head -c 4096 /dev/urandom > "/dev/tcp/127.0.0.1/$port" 2>/dev/null
printf 'YKCP\001\002\000\000\377\377' > "/dev/tcp/127.0.0.1/$port" 2>/dev/null
printf 'GET /metrics HTTP/1.0\r\n\r\n' > "/dev/tcp/127.0.0.1/$port" 2>/dev/null
# garbage and a half request at the metrics port do not take it down
head -c 2048 /dev/urandom > "/dev/tcp/127.0.0.1/$mport" 2>/dev/null
printf 'GET /metr' > "/dev/tcp/127.0.0.1/$mport" 2>/dev/null
# /metrics of both ranks, parsed
for r in 0 1; do
  resp=$(http_get 127.0.0.1 $((mport + r)) /metrics | tr -d '\r')
  body=$(echo "$resp" | sed '1,/^$/d')
  if echo "$resp" | head -1 | grep -q "200 OK" && echo "$body" | python3 "$(dirname "$0")/prom_check.py" $r 2>"$YK_TMP/prom.err"; then pass "rank $r /metrics scraped and parsed"; else fail "rank $r /metrics: $(cat "$YK_TMP/prom.err") $resp"; fi
done
http_get 127.0.0.1 $mport /nope | head -1 | grep -q 404 && pass "/nope is 404" || fail "/nope not 404"
wait $L; rc=$?
[ $rc = 0 ] && pass "the job went on and finished after the abuse" || fail "job exit $rc: $(tail -5 "$out")"
grep -q "refused .*bad magic" "$out" && grep -q "hung up without sending a frame" "$out" && pass "coordinator logged the refusals" \
  || fail "no refusal lines in the launcher log"

# 5b. a flood of connections that never send a frame: five WARN lines, then
#     one line with the count (not one line per connection)
out=$YK_TMP/flood.log
"$YOKE" launch -n 2 -- daemon-selftest --steps 80 --step-ms 25 $HB > "$out" 2>&1 &
L=$!
wait_for "all 2 ranks registered" "$out" 20
port=$(launcher_port "$out")
for _ in $(seq 300); do : > "/dev/tcp/127.0.0.1/$port"; done 2>/dev/null
wait $L; rc=$?
n=$(grep -c "coordinator: .*hung up without sending a frame" "$out")
m=$(sed -n 's/.*coordinator: refused \([0-9]*\) more connections that sent no valid frame.*/\1/p' "$out" | awk '{s += $1} END {print s + 0}')
[ $rc = 0 ] && [ "$n" -le 5 ] && [ $((n + m)) -ge 290 ] && pass "300 silent connections: $n lines + one count of $m (exit 0)" \
  || fail "flood: exit $rc, $n lines, counted $m: $(grep coordinator: "$out" | tail -2)"

# 5c. a signal while a rank waits for rendezvous: SIGTERM exits 143 (no step
#     boundary, so no checkpoint), SIGINT 130; lines before the rank is known
#     carry no rank tag, never another rank's
for sig in TERM:143 INT:130; do
  s=${sig%:*} want=${sig#*:}
  YOKE_RANK=0 YOKE_WORLD=2 YOKE_COORD=127.0.0.1:$(free_port) "$YOKE" daemon-selftest > "$YK_TMP/rdv$s.log" 2>&1 &
  P=$!
  wait_for "listening on" "$YK_TMP/rdv$s.log" 10
  kill -$s $P; wait $P; rc=$?
  [ $rc = $want ] && pass "SIG$s during rendezvous exits $want" || fail "SIG$s during rendezvous: exit $rc: $(tail -2 "$YK_TMP/rdv$s.log")"
done
YOKE_RANK=5 YOKE_WORLD=2 YOKE_COORD=127.0.0.1:1 "$YOKE" train /dev/null --set data.train="$YK_TMP/none.bin" > "$YK_TMP/tag.log" 2>&1
grep -qE "Z ERROR .*YOKE_RANK='5'" "$YK_TMP/tag.log" && pass "a bad YOKE_RANK is logged without a rank tag" \
  || fail "rank tag before the rank is known: $(cat "$YK_TMP/tag.log")"

# 6. one log for a training job: rank 0's step lines, validation and
#    summary once; other ranks only warnings and errors (log.ranks=all
#    shows them all); train.log_file gets rank 0's JSON lines
"$YOKE" data prepare --out "$YK_TMP/data" /usr/share/common-licenses/* > /dev/null || fail "data prepare"
cat > "$YK_TMP/job.yaml" <<YAML
model: {name: tiny}
data: {train: $YK_TMP/data/train_*.bin, val: $YK_TMP/data/val_*.bin}
train: {micro_batch: 2, seq_len: 32, steps: 6, threads: 1, val_every: 3, val_batches: 2}
YAML
T="train $YK_TMP/job.yaml $HB --set coord.port=0"
"$YOKE" launch -n 2 -- $T --set train.log_file="$YK_TMP/steps.jsonl" --save-weights "$YK_TMP/w.bin" > "$YK_TMP/one.log" 2>&1; rc=$?
n=$(grep -cE "INFO  step [0-9]+/6 \|" "$YK_TMP/one.log")
[ $rc = 0 ] && [ "$n" = 6 ] && [ "$(grep -cE "step [0-9]+/6 \|" "$YK_TMP/one.log")" = "$(grep -cE "^\[r0\].* step [0-9]+/6 \|" "$YK_TMP/one.log")" ] \
  && pass "2 ranks: each step line printed once, by rank 0" || fail "2 ranks: exit $rc, $n step lines"
grep -q "^\[r1\].* INFO " "$YK_TMP/one.log" && fail "rank 1 printed INFO lines: $(grep "^\[r1\].* INFO " "$YK_TMP/one.log" | head -2)" \
  || pass "rank 1 prints no INFO line by default"
[ "$(grep -c "val loss" "$YK_TMP/one.log")" = 4 ] && pass "validation lines once (steps 0, 3, 6 and the summary)" \
  || fail "val lines: $(grep -c "val loss" "$YK_TMP/one.log")"
grep -qE "^\[r0\].* done: 6 steps, 768 tokens in [0-9.]+ s, [0-9]+ tokens/s; final loss [0-9.]+, val loss [0-9.]+ -> [0-9.]+; .*; weights in $YK_TMP/w.bin\$" "$YK_TMP/one.log" \
  && [ "$(grep -c "INFO  done: " "$YK_TMP/one.log")" = 1 ] && pass "one summary: steps, tokens, time, tokens/s, losses, weights" \
  || fail "summary: $(grep " done: " "$YK_TMP/one.log")"
grep -qE "^[0-9TZ:.-]+ INFO  launch: job done in [0-9.]+ s: 6 steps, 768 tokens, [0-9]+ tokens/s, final loss [0-9.]+; all 2 ranks finished$" "$YK_TMP/one.log" \
  && ! grep -q $'[\r\033]' "$YK_TMP/one.log" && pass "launcher's summary (steps, tokens, tokens/s, loss), no progress bar in a pipe" \
  || fail "launcher summary: $(grep "launch: job" "$YK_TMP/one.log" | cat -v)"
# at a terminal (a pty from script(1)) the launcher draws the bar with an ETA
if command -v script > /dev/null; then
  script -qc "$YOKE launch -n 2 -- $T --steps 200" /dev/null > "$YK_TMP/tty.log" 2>&1
  grep -qaE $'\r\\[[#.]{30}\\] [0-9]+/200 ETA [0-9]+m[0-9]{2}s \\| loss [0-9.]+ \\| [0-9]+ tok/s\033\\[K' "$YK_TMP/tty.log" \
    && grep -qa "launch: job done in [0-9.]* s: 200 steps" "$YK_TMP/tty.log" && pass "at a terminal: progress bar with ETA, then the summary" \
    || fail "tty bar: $(tail -c 400 "$YK_TMP/tty.log" | cat -v)"
else
  skip "script(1) not installed: no pty for the progress bar"
fi
if python3 - "$YK_TMP/steps.jsonl" <<'PY' 2> "$YK_TMP/jl.err"; then pass "train.log_file holds the 6 JSON step and 3 val lines"; else fail "log_file: $(cat "$YK_TMP/jl.err")"; fi
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steps = [r["step"] for r in rows if "loss" in r]
vals = [r["step"] for r in rows if "val_loss" in r]
assert steps == [1, 2, 3, 4, 5, 6] and vals == [0, 3, 6], rows
assert all("tokens_per_s" in r and "lr" in r for r in rows if "loss" in r)
PY
"$YOKE" launch -n 2 -- $T --set log.ranks=all > "$YK_TMP/all.log" 2>&1
for r in 0 1; do
  [ "$(grep -cE "^\[r$r\].* step [0-9]+/6 \|" "$YK_TMP/all.log")" = 6 ] && pass "log.ranks=all: rank $r prints its 6 step lines" \
    || fail "log.ranks=all: rank $r step lines: $(grep -cE "^\[r$r\].* step [0-9]+/6" "$YK_TMP/all.log")"
done
"$YOKE" launch -n 2 -- $T --set log.ranks=1 > "$YK_TMP/r1.log" 2>&1
[ "$(grep -cE "^\[r1\].* step [0-9]+/6 \|" "$YK_TMP/r1.log")" = 6 ] && ! grep -qE "^\[r0\].* step [0-9]+/6 \|" "$YK_TMP/r1.log" \
  && pass "log.ranks=1: rank 1's step lines only" || fail "log.ranks=1: $(grep -cE "step [0-9]+/6" "$YK_TMP/r1.log") step lines"
expect_fail 2 "log.ranks=zero is a config error" "$YOKE" launch -n 2 -- $T --set log.ranks=zero
expect_stderr "log.ranks 'zero' is not a rank list" "$YOKE" launch -n 2 -- $T --set log.ranks=zero

# 6b. `yoke status` with no flags reaches the job `yoke launch` started here
#     (its job file: address and secret, 0600 in a 0700 run directory, gone
#     at exit); a stale file is dropped; two jobs: listed, pick with --job
export XDG_RUNTIME_DIR=$YK_TMP/run   # a run directory of our own: other jobs on this machine
mkdir -m 0700 "$XDG_RUNTIME_DIR"
mkdir -m 0700 "$XDG_RUNTIME_DIR/yoke"
printf 'yoke-job 1\nid 00000000deadbeef\npid 999999999\ncoord 127.0.0.1:1\nsecret 00\n' > "$XDG_RUNTIME_DIR/yoke/00000000deadbeef.job"
LONG="train $YK_TMP/job.yaml $HB --set coord.port=0 --set train.steps=100000"
env -u YOKE_SECRET "$YOKE" launch -n 2 -- $LONG > "$YK_TMP/st1.log" 2>&1 &
L1=$!
wait_for "all 2 ranks registered" "$YK_TMP/st1.log" 20
jf=$(ls "$XDG_RUNTIME_DIR"/yoke/*.job 2>/dev/null | grep -v deadbeef)
[ -n "$jf" ] && [ "$(stat -c %a "$jf")" = 600 ] && [ "$(stat -c %a "$XDG_RUNTIME_DIR/yoke")" = 700 ] \
  && grep -q "coordinator on 127.0.0.1:[0-9]*, job $(basename "$jf" .job)" "$YK_TMP/st1.log" \
  && pass "the launcher prints its address and job, and writes a 0600 job file" || fail "job file: '$jf' $(ls -la "$XDG_RUNTIME_DIR/yoke")"
st=$(env -u YOKE_SECRET "$YOKE" status 2>&1); rc=$?
[ $rc = 0 ] && echo "$st" | grep -qE "^job $(basename "$jf" .job) +epoch 1 +world 2 +alive 2" \
  && pass "yoke status with no flags reaches the launched job" || fail "status: rc $rc: $st"
[ ! -e "$XDG_RUNTIME_DIR/yoke/00000000deadbeef.job" ] && pass "a dead launcher's job file is dropped" || fail "stale job file kept"
env -u YOKE_SECRET "$YOKE" launch -n 2 -- $LONG > "$YK_TMP/st2.log" 2>&1 &
L2=$!
wait_for "all 2 ranks registered" "$YK_TMP/st2.log" 20
env -u YOKE_SECRET "$YOKE" status > "$YK_TMP/st.out" 2> "$YK_TMP/st.err"; rc=$?
[ $rc = 2 ] && [ "$(grep -c "127.0.0.1:" "$YK_TMP/st.err")" = 2 ] && grep -q "say which with --job ID" "$YK_TMP/st.err" \
  && pass "two jobs: status lists both and asks for --job (exit 2)" || fail "two jobs: rc $rc: $(cat "$YK_TMP/st.err")"
id2=$(sed -n 's/.*, job \([0-9a-f]*\) .*/\1/p' "$YK_TMP/st2.log" | head -1)
env -u YOKE_SECRET "$YOKE" status --job "${id2:0:6}" --stop > /dev/null 2>&1
wait $L2; rc2=$?
env -u YOKE_SECRET "$YOKE" status --stop > /dev/null 2>&1
wait $L1; rc1=$?
[ $rc1 = 130 ] && [ $rc2 = 130 ] && pass "status --stop (and --job ID --stop) stop the launched jobs (130)" \
  || fail "status --stop: exits $rc1 and $rc2: $(tail -n 2 "$YK_TMP/st1.log")"
[ -z "$(ls "$XDG_RUNTIME_DIR/yoke")" ] && pass "job files removed at exit" || fail "left: $(ls "$XDG_RUNTIME_DIR/yoke")"
expect_fail 2 "status --job of no such job" "$YOKE" status --job ffff
unset XDG_RUNTIME_DIR

# 7. usage errors
expect_fail 2 "launch without -n" "$YOKE" launch -- daemon-selftest
expect_stderr "unknown option '--bogus'" "$YOKE" launch --bogus
expect_fail 2 "selftest unknown flag" "$YOKE" daemon-selftest --frob
expect_ok "launch --help" "$YOKE" launch --help
expect_ok "status --help" "$YOKE" status --help
expect_ok "coord --help" "$YOKE" coord --help
finish
