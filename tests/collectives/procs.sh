# Launch N coll_mp ranks as plain processes with the file bootstrap.
# launch N DIR ARGS... : starts ranks in the background, pids in PIDS[], logs in DIR/rank<i>.log
launch() {
  local n=$1 dir=$2; shift 2
  PIDS=()
  mkdir -p "$dir"
  for ((i = 0; i < n; i++)); do
    "$YK_BUILD_DIR/tests/collectives/coll_mp" "$@" --bootstrap file --dir "$dir/rdv" --job "j$$" --rank $i --size $n \
      > "$dir/rank$i.log" 2>&1 &
    PIDS+=($!)
  done
}
# wait_all: waits for PIDS, exit codes in RCS[]
wait_all() {
  RCS=()
  for p in "${PIDS[@]}"; do wait "$p"; RCS+=($?); done
}
