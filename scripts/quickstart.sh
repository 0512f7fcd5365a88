#!/usr/bin/env bash
# Quick-start command 1: install what is missing, build, make a corpus from
# the license texts every Debian machine has, and train a small GPT with 2
# local ranks (yoke launch: coordinator + 2 processes, libfabric data plane),
# then print a short sample of its text.
# Extra arguments go to the job, e.g. scripts/quickstart.sh --set train.steps=50
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/install-deps.sh
scripts/build.sh
build/cli/yoke data prepare --out data-cache/licenses /usr/share/common-licenses/*
build/cli/yoke launch -n 2 cluster-configs/quickstart.yaml --set train.save_weights=data-cache/quickstart.bin "$@"
# A short sample from the model just trained (byte tokenizer, fixed seed:
# the same text on every run of the same build; see docs/sampling.md).
echo "--- yoke sample --weights data-cache/quickstart.bin --prompt 'The ' --tokens 200 --temperature 0.8 --top-k 20 --seed 1"
build/cli/yoke sample --weights data-cache/quickstart.bin --prompt "The " --tokens 200 --temperature 0.8 --top-k 20 --seed 1
