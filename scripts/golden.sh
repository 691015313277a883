#!/usr/bin/env bash
# Records the outputs of every experiment kind at small settings, for checking that a refactor
# changes no result:   scripts/golden.sh OUT_BEFORE; (change); scripts/golden.sh OUT_AFTER;
#                      scripts/golden-compare.py OUT_BEFORE OUT_AFTER
# (TWEEDIE_BIN: directory of prebuilt binaries.) About 3 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: scripts/golden.sh OUT_DIR}"
if [ -z "${TWEEDIE_BIN:-}" ]; then
  cargo build --release --bin train --bin sample --bin eval
  TWEEDIE_BIN="${CARGO_TARGET_DIR:-target}/release"
fi
# Work in one fixed place (paths end up in configs and plot titles), then move to OUT.
FINAL="$OUT"
OUT="${TMPDIR:-/tmp}/tweedie-golden"
rm -rf "$OUT" "$FINAL"
mkdir -p "$OUT/files"
F="$OUT/files"
q=(--quiet)

# Diffusion training: 30 steps of the 10-minute recipe (losses, the final grid, the loss curve).
sed -e 's/^steps = 2500.*/steps = 30/' -e 's/^checkpoint_every = 250/checkpoint_every = 15/' \
  experiments/mnist-tiny.toml > "$F/train.toml"
"$TWEEDIE_BIN/train" --config "$F/train.toml" --run-dir "$OUT/ck" "${q[@]}" > "$OUT/train.stdout"
# The MNIST classifier, 40 steps (or GOLDEN_CLASSIFIER=DIR: a copy of that one, to compare the
# classifier-dependent outputs of two builds whose classifier training differs).
if [ -n "${GOLDEN_CLASSIFIER:-}" ]; then
  mkdir -p "$OUT/cls"
  cp "$GOLDEN_CLASSIFIER"/classifier.* "$OUT/cls/"
else
  sed -e 's/^steps = 600/steps = 40/' experiments/mnist-classifier.toml > "$F/classifier.toml"
  "$TWEEDIE_BIN/train" --config "$F/classifier.toml" --run-dir "$OUT/cls" "${q[@]}" 2> "$OUT/classifier.stderr"
fi
# Evaluation of the bound on 4 test images.
"$TWEEDIE_BIN/eval" --checkpoint "$OUT/ck" --n 4 --batch-size 4 "${q[@]}" > "$OUT/eval.json"
# Unconditional samples, every sampler.
for s in ddpm ddim heun dpmpp2m; do
  "$TWEEDIE_BIN/sample" --checkpoint "$OUT/ck" --sampler "$s" --steps 8 --n 6 --seed 2 \
    --out "$OUT/sample-$s" "${q[@]}" > /dev/null
done
# Reconstruction: SR ×4 (pinv, DPS, DiffPIR, ΠGDM) and box inpainting (replacement), 2 images.
for task in sr4 inpaint-box; do
  sed -e 's/^steps = 100/steps = 6/' -e 's/^samples = 4 .*/samples = 2/' \
    -e "s#^checkpoint = .*#checkpoint = \"$OUT/ck\"#" "experiments/mnist-$task.toml" > "$F/$task.toml"
  "$TWEEDIE_BIN/sample" --config "$F/$task.toml" --n-images 2 --out "$OUT/recon-$task" "${q[@]}" > /dev/null
done
# The Gaussian-mixture benchmark.
sed -e 's/^particles = .*/particles = [1, 4]/' -e 's/^steps = 100/steps = 20/' \
  -e 's/^amortized_steps = 100/amortized_steps = 20/' \
  -e 's/^n_samples = 500/n_samples = 60/' experiments/gmm-2mode.toml > "$F/gmm.toml"
"$TWEEDIE_BIN/sample" --config "$F/gmm.toml" --out "$OUT/gmm" "${q[@]}" > /dev/null 2>&1
# Class-conditional digits.
sed -e 's/^classes = .*/classes = [0, 7]/' -e 's/^per_class = 2/per_class = 1/' \
  -e 's/^steps = 50/steps = 6/' -e 's/^particles = .*/particles = [1, 2]/' \
  -e "s#^checkpoint = .*#checkpoint = \"$OUT/ck\"#" -e "s#^classifier = .*#classifier = \"$OUT/cls\"#" -e "/^judge = /d" \
  experiments/mnist-class.toml > "$F/class.toml"
"$TWEEDIE_BIN/sample" --config "$F/class.toml" --out "$OUT/class" "${q[@]}" > /dev/null 2>&1
# Quality against NFE.
"$TWEEDIE_BIN/sample" nfe --checkpoint "$OUT/ck" --samplers ddim,dpmpp2m --nfe 4,8 --n 6 \
  --classifier "$OUT/cls" --n-reference 200 --out "$OUT/nfe" "${q[@]}" > "$OUT/nfe.md"
mkdir -p "$(dirname "$FINAL")"
mv "$OUT" "$FINAL"
echo "recorded in $FINAL"
