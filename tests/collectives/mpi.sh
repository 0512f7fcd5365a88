#!/bin/bash
# Collectives under mpirun: the MPI transport (and libfabric with the MPI
# bootstrap) with 2, 3 and 4 processes, exact results checked by every rank.
source "$YK_SOURCE_DIR/tests/lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

P="$YK_BUILD_DIR/tests/collectives/coll_mp"
run() { timeout 100 mpirun -np "$1" --oversubscribe --bind-to none "$P" "${@:2}"; }
for np in 2 3 4; do
  expect_ok "mpirun -np $np, transport mpi" run $np check --transport mpi
done
expect_ok "mpirun -np 2 --big, transport mpi" run 2 check --transport mpi --big
expect_ok "mpirun -np 3, transport libfabric shm over the MPI bootstrap" run 3 check --transport libfabric --provider shm
# the shared-memory board between processes: one-shot up to 64 bytes, then
# the direct two-shot, reading peers through process_vm_readv or (registered
# buffers) through their memfd mapped here
expect_ok "mpirun -np 2, board two-shot via cross-memory attach" run 2 check --transport mpi --oneshot 64
expect_ok "mpirun -np 3, board two-shot on registered buffers" run 3 check --transport mpi --oneshot 64 --register
expect_ok "mpirun -np 4 --big, board two-shot on registered buffers" run 4 check --transport mpi --big --register
# the cost-model calibration writes its constants (it must not need the
# benchmark's registered buffers)
CAL=$(mktemp /tmp/yk_cal.XXXXXX)
if timeout 100 mpirun -np 2 --bind-to none "$YK_BUILD_DIR/cli/yoke" bench coll --calibrate "$CAL" > /tmp/yk_cal_out.$$ 2>&1 &&
   grep -q "^alpha_us " "$CAL" && grep -q "^beta_ns " "$CAL"; then pass "bench coll --calibrate writes $(grep -c . "$CAL") lines"
else fail "bench coll --calibrate: $(tail -3 /tmp/yk_cal_out.$$)"; fi
rm -f "$CAL" /tmp/yk_cal_out.$$
# the benchmark's rows over tcp;ofi_rxm, exact, with the TCP loopback probe
# (the ceiling the gloo comparison is read against) in the JSON output
OUT=/tmp/yk_bc_out.$$
if timeout 200 mpirun -np 2 --bind-to none "$YK_BUILD_DIR/cli/yoke" bench coll --transport libfabric \
     --provider "tcp;ofi_rxm" --algo ring --dtype f32 -b 4K -e 1M -f 16 --no-mpi --no-gloo --json > "$OUT" 2>/dev/null &&
   [ "$(grep -c '"impl":"yoke".*"wrong":0}' "$OUT")" = 3 ] &&
   grep -q '"op":"tcp_probe","ranks":2,"bytes":1048576,"link_gbs":[0-9.]*[1-9]' "$OUT"; then
  pass "bench coll over tcp;ofi_rxm: 3 exact rows and the TCP probe ($(grep -o '"link_gbs":[0-9.]*' "$OUT"))"
else fail "bench coll over tcp: $(head -c 600 "$OUT")"; fi
rm -f "$OUT"
finish
