#!/bin/bash
# An rsh agent for OpenMPI that "logs in" to a network namespace:
#   mpirun --mca plm_rsh_agent tests/daemon/nsrsh.sh -H nsA,nsB ...
# OpenMPI calls it as `nsrsh.sh [ssh options] HOST COMMAND...`; the command
# (orted) runs inside netns HOST, whose name also becomes the rank's host
# name (YOKE_HOSTNAME) so messages name the "host".
while [ "${1:0:1}" = - ]; do shift; done
host=$1
shift
exec ip netns exec "$host" env YOKE_HOSTNAME="$host" sh -c "$*"
