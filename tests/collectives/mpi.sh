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
finish
