# Helpers for the daemon's multi-process tests. Source after tests/lib.sh.
#
# The rank workload is one variable so these tests can switch from the
# control-plane selftest to the real step loop (`yoke train job.yaml`):
#   YK_WORKLOAD       a short job that finishes by itself in a few seconds
#   YK_WORKLOAD_LONG  a job that runs for minutes unless stopped
# Both are yoke subcommands with arguments (word-split on purpose).
: "${YK_WORKLOAD:=daemon-selftest --steps 20 --step-ms 25}"
: "${YK_WORKLOAD_LONG:=daemon-selftest --steps 100000 --step-ms 20}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1

YK_TMP=$(mktemp -d /tmp/yk-daemon-test.XXXXXX)
YK_CLEANUP=()
cleanup_all() {
  local c
  for c in "${YK_CLEANUP[@]}"; do eval "$c" >/dev/null 2>&1 || true; done
  rm -rf "$YK_TMP"
}
trap cleanup_all EXIT

# A TCP port (and the next few) nobody listens on.
free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 30000))
    if ! ss -ltnH 2>/dev/null | awk '{print $4}' | grep -qE ":($p|$((p + 1))|$((p + 2))|$((p + 3)))\$"; then
      echo "$p"; return 0
    fi
  done
  echo 29999
}

# wait_for PATTERN FILE SECONDS: until FILE has a line matching PATTERN.
wait_for() {
  local pat=$1 file=$2 secs=$3 i
  for i in $(seq $((secs * 20))); do
    grep -qE "$pat" "$file" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# pids_gone PID...: 0 if none of the processes exists any more.
# (a zombie whose parent has not reaped it yet counts as gone)
pids_gone() {
  local p st
  for p in "$@"; do
    st=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) || continue
    [ -n "$st" ] && [ "$st" != Z ] && return 1
  done
  return 0
}

# ms since the epoch
now_ms() { date +%s%3N; }

# The coordinator port the launcher printed in LOG.
launcher_port() { grep -oE 'coordinator on [0-9.]+:[0-9]+' "$1" | head -1 | sed 's/.*://'; }

# rank_pid LAUNCHER_PID RANK: the pid of that rank (a child of the launcher),
# found by its YOKE_RANK, so it works for any workload.
rank_pid() {
  local p
  for p in $(ps --ppid "$1" -o pid= 2>/dev/null); do
    if tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "YOKE_RANK=$2"; then echo "$p"; return 0; fi
  done
  return 1
}
# all_ranks LAUNCHER_PID: pids of all its children
all_ranks() { ps --ppid "$1" -o pid= 2>/dev/null | tr -d ' '; }

# http_get HOST PORT PATH: print the response (headers and body).
http_get() {
  local host=$1 port=$2 path=$3
  if command -v curl >/dev/null; then
    curl -s -i --max-time 5 "http://$host:$port$path"
  else
    exec 3<>"/dev/tcp/$host/$port" || return 1
    printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$host" >&3
    timeout 5 cat <&3
    exec 3<&-
  fi
}
