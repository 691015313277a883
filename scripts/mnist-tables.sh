#!/usr/bin/env bash
# The README's MNIST reconstruction tables: for each preset, tune the step sizes on train images
# (`sample tune`, 4 images, 1 sample each), then run the tuned copy on its test images and print
# a Markdown table from its metrics.json. Needs checkpoints/mnist-tiny (scripts/demo.sh).
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
  python3 - "out/mnist-$t/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{m['operator']}, {m['noise']}, {len(m['images'])} test images")
print("| method | PSNR | SSIM | PSNR (mean) | SSIM (mean) | NFE | VJP | s / sample | ESS |")
print("|---|---|---|---|---|---|---|---|---|")
for key, r in m["methods"].items():
    n = max(1, len(r["images"]) * r["samples_per_image"])
    ess = f"{r['ess_mean']:.1f}" if r.get("ess_mean") is not None else "–"
    print(f"| {key} | {r['psnr_mean']:.2f} | {r['ssim_mean']:.3f} | {r['psnr_posterior_mean']:.2f} | "
          f"{r['ssim_posterior_mean']:.3f} | {r['nfe']} | {r['vjps']} | {r['seconds'] / n:.2f} | {ess} |")
PY
  echo
done
