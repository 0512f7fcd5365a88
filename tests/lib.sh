# Shared helpers for shell tests. Each test sources this, calls the expect_*
# helpers, and ends with `finish`, which prints "N passed, N failed".
YK_PASSED=0
YK_FAILED=0
pass() { YK_PASSED=$((YK_PASSED + 1)); echo "ok: $*"; }
fail() { YK_FAILED=$((YK_FAILED + 1)); echo "FAIL: $*"; }
expect_ok() {
  local what=$1; shift
  if "$@" > /tmp/yk_test_out.$$ 2>&1; then pass "$what"; else fail "$what (exit $?): $(tail -5 /tmp/yk_test_out.$$)"; fi
}
expect_fail() {
  local code=$1 what=$2; shift 2
  "$@" > /tmp/yk_test_out.$$ 2>&1; local rc=$?
  if [ "$rc" = "$code" ]; then pass "$what"; else fail "$what: exit $rc, wanted $code: $(tail -5 /tmp/yk_test_out.$$)"; fi
}
expect_stderr() {
  local needle=$1; shift
  local err; err=$("$@" 2>&1 >/dev/null)
  case "$err" in *"$needle"*) pass "stderr has: $needle" ;; *) fail "stderr lacks '$needle': $err" ;; esac
}
# Numbers. A value a test reads from a log or JSON line may be missing (the
# line changed, the run died): an empty string must fail a numeric check,
# never pass it (awk compares "" as 0).
is_num() { [[ ${1-} =~ ^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]]; }
# num_test A OP B: A OP B for OP in < <= > >=; false unless both are numbers.
num_test() {
  is_num "${1-}" && is_num "${3-}" && awk -v a="$1" -v op="$2" -v b="$3" 'BEGIN { a += 0; b += 0
    exit !(op == "<" ? a < b : op == "<=" ? a <= b : op == ">" ? a > b : op == ">=" ? a >= b : 0) }'
}
# close_to A B TOL: |A - B| <= TOL; false unless all three are numbers.
close_to() {
  is_num "${1-}" && is_num "${2-}" && is_num "${3-}" &&
    awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= t + 0) }'
}

# Per-step training records. yk_steps FILE... prints "STEP LOSS GRAD_NORM
# SKIPPED" for every step line of `yoke train --json` output (a multi-rank
# run prints step lines from rank 0 only; a skipped fp16 step prints
# grad_norm 0).
yk_steps() {
  cat "$@" | sed -n 's/.*"step": \([0-9]*\), "loss": \([^,]*\), "lr": [^,]*, "grad_norm": \([^,]*\), .*"skipped": \([a-z]*\)}.*/\1 \2 \3 \4/p'
}
# compare_steps WHAT A B FIRST LAST LOSS_ABS NORM_REL: runs A and B (files of
# `yoke train --json` output) both print steps FIRST..LAST once each, skip
# the same steps, and agree on every step's loss within LOSS_ABS (absolute)
# and grad_norm within NORM_REL (relative to B's). Passes or fails WHAT with
# the largest differences; a failure names the first step out of tolerance.
# Losses alone are not enough: gradient clipping and AdamW cancel a constant
# gradient scale (a missing 1/accum or an average turned into a sum leaves
# the losses as they are and multiplies the norm).
compare_steps() {
  local what=$1 a=$2 b=$3 first=$4 last=$5 tl=$6 tn=$7 msg
  msg=$({ yk_steps "$a" | sed 's/^/1 /'; yk_steps "$b" | sed 's/^/2 /'; } | awk -v first="$first" -v last="$last" \
    -v tl="$tl" -v tn="$tn" '
    function num(x) { return x ~ /^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$/ }
    function abs(x) { return x < 0 ? -x : x }
    { s = $2 + 0; if (s < first || s > last) next
      if (NF != 5 || !num($3) || !num($4) || ($5 != "true" && $5 != "false")) { err = err " malformed step line (run " $1 "): " $0 ";"; next }
      if (($1, s) in L) { err = err " step " s " printed twice (run " $1 ");"; next }
      L[$1, s] = $3; N[$1, s] = $4; K[$1, s] = $5 }
    END {
      ml = 0; mn = 0; n = 0
      for (s = first; s <= last; s++) {
        if (!((1, s) in L) || !((2, s) in L)) { miss = miss " " s; continue }
        if (K[1, s] != K[2, s]) { err = err " step " s " skipped in one run only;"; continue }
        n++
        d = abs(L[1, s] - L[2, s]); if (d > ml) ml = d
        if (d > tl && !el) el = sprintf(" step %d loss %s vs %s;", s, L[1, s], L[2, s])
        if (K[1, s] == "true") continue
        d = abs(N[1, s] - N[2, s]); r = abs(N[2, s]) > 0 ? d / abs(N[2, s]) : (d > 0 ? 1e30 : 0); if (r > mn) mn = r
        if (r > tn && !en) en = sprintf(" step %d grad_norm %s vs %s (ratio %.4g);", s, N[1, s], N[2, s],
                                        abs(N[2, s]) > 0 ? N[1, s] / N[2, s] : 0)
      }
      if (miss != "") err = err " steps missing:" miss ";"
      sum = sprintf("%d steps, max |dloss| %.3g (limit %g), max grad_norm rel diff %.3g (limit %g)", n, ml, tl, mn, tn)
      if (err el en != "") { print sum ":" err el en; exit 1 }
      print sum }')
  if [ $? = 0 ]; then pass "$what: $msg"; else fail "$what: $msg"; fi
}

# Shared-memory regions of processes that no longer exist: libfabric's shm
# provider names them after the pid (yk<pid>_..., <pid>:0:0) and a rank
# killed with -9 cannot remove its own. The kill tests leave them behind.
yk_sweep_shm() {
  local f p
  for f in /dev/shm/yk[0-9]*_* /dev/shm/[0-9]*:0:0; do
    [ -e "$f" ] || continue
    p=${f#/dev/shm/}; p=${p#yk}; p=${p%%[_:]*}
    case $p in '' | *[!0-9]*) continue ;; esac
    kill -0 "$p" 2>/dev/null || rm -f "$f"
  done
}
# skip WHY: this test cannot run its real check on this machine. Prints one
# line "SKIP: WHY" and exits 77, which ctest (SKIP_RETURN_CODE 77, set for
# every test in tests/CMakeLists.txt) lists as skipped, not passed. For a
# missing prerequisite only; a check that runs and fails is a failure.
skip() {
  rm -f /tmp/yk_test_out.$$
  echo "SKIP: $*"
  exit 77
}
# need_netns WHAT: skip unless this process can create network namespaces
# and veth pairs (root, iproute2, and a kernel or container that allows it).
need_netns() {
  local err probe=ykq$$
  [ "$(id -u)" = 0 ] || skip "$1 needs root for network namespaces (running as uid $(id -u))"
  command -v ip > /dev/null || skip "$1 needs iproute2 (ip), which scripts/install-deps.sh installs"
  err=$(ip netns add "$probe" 2>&1) || skip "$1: cannot create a network namespace here: $err"
  ip netns del "$probe" 2> /dev/null
  err=$(ip link add "${probe}a" type veth peer name "${probe}b" 2>&1) || skip "$1: cannot create a veth pair here: $err"
  ip link del "${probe}a" 2> /dev/null
  return 0
}
# need_slurm WHAT: skip unless a one-node SLURM cluster can be started here
# (tests/daemon/slurm-cluster.sh: root, slurm-wlm and munge installed).
need_slurm() {
  local b missing=""
  [ "$(id -u)" = 0 ] || skip "$1 starts a one-node SLURM cluster, which needs root (running as uid $(id -u))"
  for b in munged slurmctld slurmd srun sbatch sinfo scontrol; do command -v "$b" > /dev/null || missing="$missing $b"; done
  [ -z "$missing" ] || skip "$1 needs SLURM and munge (missing:$missing), which scripts/install-deps.sh installs"
  return 0
}
finish() {
  yk_sweep_shm
  rm -f /tmp/yk_test_out.$$
  echo "$YK_PASSED passed, $YK_FAILED failed"
  [ "$YK_FAILED" = 0 ]
}
