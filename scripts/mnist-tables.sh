#!/usr/bin/env bash
# The MNIST reconstruction tables of docs/results.md: for each preset, tune the step sizes on train images
# (`sample tune`, 4 images, 1 sample each), then run the tuned copy on its test images and print
# a Markdown table from its metrics.json. Needs checkpoints/mnist-tiny (scripts/demo.sh). Where a
# task has an amortized preset and its conditional model is trained
# (train --config experiments/mnist-<task>-amortized.toml), the rows of
# experiments/mnist-<task>-amortized-sample.toml (amortized, csb) follow, with training seconds.
#   scripts/mnist-tables.sh [TASK...]     (default: every MNIST reconstruction preset)
# Tuned copies: out/tuned/mnist-<task>.toml; results: out/mnist-<task>/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${TWEEDIE_BIN:-${CARGO_TARGET_DIR:-target}/release}"
[ -n "${TWEEDIE_BIN:-}" ] || cargo build --release --bin sample >/dev/null
TASKS=("$@")
[ ${#TASKS[@]} -gt 0 ] || TASKS=(sr4 inpaint-box inpaint-random deblur denoise deblur-poisson inpaint-half-tds sr4-equal-cost)
mkdir -p out/tuned
for t in "${TASKS[@]}"; do
  echo "### mnist-$t"
  "$BIN/sample" tune --config "experiments/mnist-$t.toml" --images 4 --samples 1 \
    --out "out/tuned/mnist-$t.toml" --quiet > "out/tuned/mnist-$t.search.md"
  grep -E '^[a-z]+\.[a-z]+ = ' "out/tuned/mnist-$t.search.md" | sed 's/^/tuned: /' || true
  "$BIN/sample" --config "out/tuned/mnist-$t.toml" --out "out/mnist-$t" --quiet > /dev/null
  metrics=("out/mnist-$t/metrics.json")
  if [ -f "experiments/mnist-$t-amortized-sample.toml" ] && [ -d "checkpoints/mnist-$t-amortized" ]; then
    "$BIN/sample" --config "experiments/mnist-$t-amortized-sample.toml" --quiet > /dev/null
    metrics+=("out/mnist-$t-amortized-sample/metrics.json")
  fi
  python3 - "${metrics[@]}" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{m['operator']}, {m['noise']}, {len(m['images'])} test images")
print("| method | PSNR | SSIM | PSNR (mean) | SSIM (mean) | NFE | VJP | s / sample | ESS | train s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for i, path in enumerate(sys.argv[1:]):
    for key, r in json.load(open(path))["methods"].items():
        if i > 0 and key == "pinv":
            continue
        n = max(1, len(r["images"]) * r["samples_per_image"])
        ess = f"{r['ess_mean']:.1f}" if r.get("ess_mean") is not None else "–"
        tr = f"{r['train_seconds']:.0f}" if r.get("train_seconds") is not None else "–"
        print(f"| {key} | {r['psnr_mean']:.2f} | {r['ssim_mean']:.3f} | {r['psnr_posterior_mean']:.2f} | "
              f"{r['ssim_posterior_mean']:.3f} | {r['nfe']} | {r['vjps']} | {r['seconds'] / n:.2f} | {ess} | {tr} |")
PY
  echo
done
