#!/bin/bash
# `yoke bench scale --hosts`: 2 namespace hosts x 1 rank, tiny model, 2
# steps, links at 1 Gbit/s. Checks the rows (not their figures: the machine
# is shared) and that the hosts go away: after a clean run, after a job
# fails, after SIGINT, and the leftovers of a run killed earlier (only names
# of the benchmark's prefix whose pid is gone). Skips (77) without root or
# network namespaces.
source "$YK_SOURCE_DIR/tests/lib.sh"
need_netns "bench scale --hosts (hosts as network namespaces)"
NSH=$YK_SOURCE_DIR/scripts/nshosts.sh
T=$(mktemp -d /tmp/yk_scale_hosts.XXXXXX)
# a dead pid for the leftovers of an "earlier run", and our own test hosts
sh -c 'exit 0' & dead=$!
wait $dead
OWN=yk$$t
cleanup() { "$NSH" down "ykbs$dead"; "$NSH" down "$OWN"; rm -rf "$T"; }
trap cleanup EXIT
# bounded SECS OUT ERR ARGS...: yoke ARGS in the background (SIGINT not
# ignored, as at a terminal), its pid in $pid (the hosts' names carry it),
# killed after SECS; its exit code in $rc. start_bounded/wait_bounded split it.
start_bounded() { secs=$1; out=$2; err=$3; shift 3; (trap - INT; exec "$YOKE" "$@") > "$out" 2> "$err" & pid=$!; }
wait_bounded() {
  local i
  for ((i = 0; i < secs * 10; i++)); do kill -0 $pid 2> /dev/null || break; sleep 0.1; done
  kill -0 $pid 2> /dev/null && { kill -KILL $pid; echo "killed after $secs s" >> "$err"; }
  wait $pid; rc=$?
}
bounded() { start_bounded "$@"; wait_bounded; }
# hosts of this run: what ip knows by the benchmark's prefix for pid $1
left() { { ip netns list; ip -o link; } 2> /dev/null | grep -c "ykbs$1[hp]"; }

# the script shapes both ends of every link
"$NSH" up "$OWN" 2 1000 > /dev/null 2>&1
q=$(tc -n "${OWN}h1" qdisc show dev eth0; tc -n "${OWN}hub" qdisc show dev "${OWN}p1")
[ "$(grep -c 'tbf .*rate 1Gbit' <<< "$q")" = 2 ] && pass "nshosts.sh: tbf at 1 Gbit/s on both ends of a link" \
  || fail "nshosts.sh qdiscs: $q"
"$NSH" down "$OWN"
[ "$(ip netns list | grep -c "^$OWN")" = 0 ] && pass "nshosts.sh down removes the hosts" || fail "left: $(ip netns list | grep "^$OWN")"

# leftovers of a killed earlier run, which the next run removes
"$NSH" up "ykbs$dead" 1 > /dev/null 2>&1
expect_fail 2 "bench scale --hosts 0 is refused" "$YOKE" bench scale --hosts 0
expect_fail 2 "bench scale --layouts bogus is refused" "$YOKE" bench scale --hosts 2 --layouts dp,bogus

ARGS=(bench scale --hosts 2 --ppn 1 --link-gbit 1 --models tiny --batch 2 --seq-len 32 --steps 2)
bounded 50 "$T/out" "$T/err" "${ARGS[@]}" --layouts dp,zero1,zero3,tp2 --json
[ $rc = 0 ] && pass "2 hosts x 1 rank at 1 Gbit/s ran" || fail "exit $rc: $(tail -5 "$T/err")"
[ -n "$pid" ] && [ "$(left "$pid")" = 0 ] && pass "no namespace or veth left after the run" || fail "left after the run: $(left "$pid")"
[ "$(ip netns list | grep -c "^ykbs$dead")" = 0 ] && pass "the leftovers of a dead run were removed" \
  || fail "leftovers of pid $dead still there"
grep -q "tp2: skipped: TP2 stays inside a host" "$T/err" && pass "tp2 with 1 rank per host: skipped, saying why" \
  || fail "no tp2 note: $(cat "$T/err")"
/usr/bin/python3 - "$T/out" <<'PY' && pass "rows: dp, zero1, zero3 on 1 and 2 hosts, with link rate, bytes and comm wait" \
  || fail "rows: $(cat "$T/out")"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
got = {(r["layout"], r["hosts"]) for r in rows}
want = {(l, h) for l in ("dp", "zero1", "zero3") for h in (1, 2)}
assert got == want, (got, want)
for r in rows:
    assert r["link_gbit"] == 1 and r["ppn"] == 1 and r["ranks"] == r["hosts"] and r["tp"] == 1, r
    assert r["ms_per_step"] > 0 and 0 < r["efficiency"] <= 5 and 0 <= r["comm_wait_frac"] <= 1, r
    if r["hosts"] == 1:
        assert r["efficiency"] == 1 and r["dp_bytes"] == 0, r
    else:  # the gradients crossed the link: the hosts sent at least what rank 0 moved
        assert r["dp_bytes"] > 0 and r["wire_bytes_per_step"] >= r["dp_bytes"], r
PY

# a job that fails (T above the model's context): exit 1, hosts removed
bounded 30 "$T/out2" "$T/err2" bench scale --hosts 2 --models tiny --batch 2 --seq-len 4096 --steps 2 --layouts dp
[ $rc = 1 ] && grep -q "failed" "$T/err2" && pass "a failing job: exit 1, named" || fail "failing job: exit $rc: $(tail -3 "$T/err2")"
[ "$(left "$pid")" = 0 ] && pass "no namespace or veth left after a failure" || fail "left after a failure: $(left "$pid")"
rm -rf "$(sed -n 's/.*kept \(\/tmp\/yk_bench_hosts_[^ ]*\) .*/\1/p' "$T/err2")"

# SIGINT while a job runs: the job stops, the hosts go, exit 130
start_bounded 30 "$T/out3" "$T/err3" "${ARGS[@]}" --steps 60000 --layouts dp
# (until the 1-rank job runs inside host 0)
for _ in $(seq 100); do [ -n "$(ip netns pids "ykbs${pid}h0" 2> /dev/null)" ] && break; sleep 0.1; done
sleep 1
kill -INT $pid
wait_bounded
[ $rc = 130 ] && pass "SIGINT during a job: exit 130" || fail "SIGINT: exit $rc: $(tail -3 "$T/err3")"
[ "$(left "$pid")" = 0 ] && pass "no namespace or veth left after SIGINT" || fail "left after SIGINT: $(left "$pid")"
grep -q "kept /tmp" "$T/err3" && fail "an interrupted run kept its directory: $(grep kept "$T/err3")" || pass "an interrupted run keeps no directory"
finish
