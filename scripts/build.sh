#!/usr/bin/env bash
# Configure and build yoke into ./build (or $YK_BUILD_DIR). Extra arguments go
# to cmake, e.g. scripts/build.sh -DYK_SANITIZE=ON. Warnings are errors here
# (YK_WERROR=ON), unlike a plain cmake build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${YK_BUILD_DIR:-$root/build}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=${CMAKE_BUILD_TYPE:-RelWithDebInfo} -DYK_WERROR=ON "$@" >/dev/null
cmake --build "$build" -j"$(nproc)"
