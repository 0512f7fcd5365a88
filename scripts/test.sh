#!/usr/bin/env bash
# Quick-start command 2: install what is missing, build, run the whole suite.
# Pass --sanitize to build with ASan+UBSan into build-asan instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
args=()
if [[ "${1:-}" == "--sanitize" ]]; then
  export YK_BUILD_DIR=$root/build-asan
  args+=(-DYK_SANITIZE=ON)
  # Full stacks so suppressions of OpenMPI's own start-up allocations match.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-fast_unwind_on_malloc=0:detect_leaks=1}
  export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/lsan.supp:print_suppressions=0}
fi
build=${YK_BUILD_DIR:-$root/build}
"$root/scripts/build.sh" "${args[@]}"
cd "$build"
# MPI as root inside CI containers needs these; harmless elsewhere.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ctest --output-on-failure --timeout 900 -j1
