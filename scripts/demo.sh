#!/usr/bin/env bash
# The main job: train the tiny MNIST model on the CPU, then sample a grid from it.
#   scripts/demo.sh [extra train flags, e.g. --steps 100, or --restart to train a new model over
#                    an existing one (the old run is moved to checkpoints/mnist-tiny.old-N)]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin train --bin sample
BIN="${CARGO_TARGET_DIR:-target}/release"
RUN=checkpoints/mnist-tiny
if [ -n "$(ls -A "$RUN" 2>/dev/null)" ] && [[ " $* " != *" --restart "* ]]; then
  echo "$RUN already holds a run: sampling from it (scripts/demo.sh --restart trains a new one;" \
    "$BIN/train --resume $RUN --steps N continues this one)"
else
  "$BIN/train" --config experiments/mnist-tiny.toml "$@"
fi
"$BIN/sample" --checkpoint "$RUN" --sampler ddpm --steps 100 --n 64 --shards 2 --out samples/mnist-tiny
