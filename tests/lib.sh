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
finish() {
  yk_sweep_shm
  rm -f /tmp/yk_test_out.$$
  echo "$YK_PASSED passed, $YK_FAILED failed"
  [ "$YK_FAILED" = 0 ]
}
