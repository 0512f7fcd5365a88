#!/usr/bin/env bash
# Install the Debian 12 packages yoke needs to build, test and benchmark.
# Idempotent: packages already present are skipped, and the script says
# exactly what it installs. Usage: scripts/install-deps.sh [--with-torch]
# (--with-torch adds python3-torch for the PyTorch baselines and fixtures).
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config git
  libopenmpi-dev openmpi-bin          # mpirun launch, MPI transport, MPI_Allreduce baseline
  libfabric-dev libfabric-bin         # default data plane (shm, tcp;ofi_rxm)
  libuv1-dev                          # control plane event loop
  libzstd-dev libxxhash-dev           # checkpoint compression and checksums
  libjansson-dev                      # JSON manifests and --json output
  libyaml-dev                         # job configs
  libssl-dev                          # HMAC for the control protocol
  libhttp-parser-dev                  # /metrics HTTP server
  check                               # unit tests
  libopenblas-dev                     # sgemm
  iproute2                            # network-namespace test hosts (coll_hier, test_daemon_netns), ss
  slurm-wlm munge                     # SLURM launch tests (test_daemon_slurm, test_train_slurm)
  gnuplot-nox                         # bench --png
  clang                               # libFuzzer target for the control-protocol decoder (fuzz_proto)
  libclang-rt-dev                     # its fuzzer and sanitizer runtimes (only recommended by clang)
  python3                             # tests: parse status --json and /metrics
  procps openssl bc                   # tests: pgrep/ps, job secrets, timing arithmetic
)
# Tests that cannot run here anyway (not root, a CPU without AVX2, a
# container that forbids network namespaces) exit 77 and ctest lists them as
# skipped, with one line saying why (docs/testing.md).
if [[ "${1:-}" == "--with-torch" ]]; then pkgs+=(python3-torch); fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#pkgs[@]} packages already present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "install-deps: need root to install: ${missing[*]}" >&2; exit 1
  fi
fi
echo "install-deps: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when the cache is missing or older than a day.
if [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]]; then
  $SUDO apt-get update -q
fi
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
echo "install-deps: done"
