# Shared set-up of the multi-rank training tests (dp.sh, mixed.sh, tp.sh, reshard.sh, ...): a temp
# dir, the license corpus as shards in $tmp/data, mpirun settings for root,
# a job secret, and a coordinator port of our own (other jobs on this machine
# may hold the default 29400). Source after tests/lib.sh.
tmp=$(mktemp -d); [ -n "${YK_KEEP_TMP:-}" ] && echo "keeping $tmp" || trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
export YOKE_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
MPIRUN="mpirun --oversubscribe --bind-to none -x YOKE_SECRET -x OMP_NUM_THREADS"
export YK_PORT=$((20000 + RANDOM % 20000))
"$YOKE" data prepare --out "$tmp/data" /usr/share/common-licenses/* > /dev/null || { fail "data prepare"; finish; exit 1; }

# train_job NAME EXPECTED_EXIT RANKS yoke-train-args...: $tmp/job.yaml on one
# rank (`yoke train`) or RANKS ranks (`yoke launch`), JSON lines in
# $tmp/NAME.json and the log in $tmp/NAME.log; an unexpected exit code fails.
train_job() {
  local name=$1 want=$2 n=$3; shift 3
  if [ "$n" = 1 ]; then "$YOKE" train "$tmp/job.yaml" --json "$@" > "$tmp/$name.json" 2> "$tmp/$name.log"
  else "$YOKE" launch -n "$n" -- train "$tmp/job.yaml" --json --set coord.port=$YK_PORT "$@" > "$tmp/$name.json" 2> "$tmp/$name.log"; fi
  local rc=$?
  [ "$rc" = "$want" ] || fail "$name: exit $rc, wanted $want: $(grep -h 'ERROR' "$tmp/$name.log" | head -3)"
  return 0
}
