#!/usr/bin/env bash
# The main job: train the tiny MNIST model on the CPU, then sample a grid from it.
#   scripts/demo.sh [extra train flags, e.g. --steps 100]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin train --bin sample
BIN="${CARGO_TARGET_DIR:-target}/release"
"$BIN/train" --config experiments/mnist-tiny.toml "$@"
"$BIN/sample" --checkpoint checkpoints/mnist-tiny --sampler ddpm --steps 100 --n 64 --shards 2 --out samples/mnist-tiny
