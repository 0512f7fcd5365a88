#!/usr/bin/env bash
# bench_compare.sh - yoke vs PyTorch 1.13 (Debian's /usr/bin/python3) on GPT-2
# 124M forward+backward, B=4, T=64/256, 1 and 2 threads, alternating the two
# so both see the same machine load. Not a ctest (minutes of CPU).
# Usage: tests/model/bench_compare.sh BUILD_DIR [rounds]
set -u
build=${1:-build}
rounds=${2:-1}
here=$(cd "$(dirname "$0")" && pwd)
export OMP_WAIT_POLICY=PASSIVE
for r in $(seq "$rounds"); do
  for T in 64 256; do
    for th in 1 2; do
      "$build/tests/model/bench_model" d12 4 "$T" "$th" 3 2>/dev/null
      OMP_NUM_THREADS=$th /usr/bin/python3 "$here/bench_torch.py" 12 768 12 50257 4 "$T" "$th" 3
      echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
    done
  done
done
