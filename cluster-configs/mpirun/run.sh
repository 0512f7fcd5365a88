#!/bin/bash
# mpirun launch: `cluster-configs/mpirun/run.sh -np 4 JOB.yaml [--set k=v ...]`
#   HOSTFILE=cluster-configs/mpirun/hostfile (default: this folder's hostfile;
#   set HOSTFILE= to run on this machine only)
#
# Each rank reads OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK. The coordinator runs
# inside rank 0 on coord.port; with a hostfile, rank 0 is on its first host,
# which we pass as coord.host. The job secret travels with -x YOKE_SECRET.
set -u
here=$(cd "$(dirname "$0")" && pwd)
[ "${1:-}" = -np ] || { echo "usage: $0 -np N JOB.yaml [yoke args...]" >&2; exit 2; }
NP=$2; JOB=${3:?usage: $0 -np N JOB.yaml [yoke args...]}; shift 3
YOKE=${YOKE:-yoke}
YOKE_CMD=${YOKE_CMD:-train}
HOSTFILE=${HOSTFILE-$here/hostfile}
PORT=${YOKE_PORT:-29400}
export YOKE_SECRET=${YOKE_SECRET:-$(openssl rand -hex 32)}
args=(-np "$NP" -x YOKE_SECRET --bind-to none)
extra=(--set coord.port=$PORT)
if [ -n "$HOSTFILE" ]; then
  args+=(--hostfile "$HOSTFILE")
  first=$(grep -v '^\s*#' "$HOSTFILE" | awk 'NF {print $1; exit}')
  extra+=(--set "coord.host=$first")
fi
exec mpirun "${args[@]}" "$YOKE" "$YOKE_CMD" "$JOB" "${extra[@]}" "$@"
