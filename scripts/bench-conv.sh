#!/usr/bin/env bash
# Per-convolution benchmark: `bench --mode conv` on every distinct convolution of the U-Net presets
# (forward, input gradient, weight gradient of Tweedie's kernels on flex, and burn-flex's own path),
# printed as one Markdown table per preset with GFLOP/s and the fraction of the machine's nominal
# fp32 peak (threads × clock × 64 FLOP/cycle with AVX-512, 32 with AVX2).
#   scripts/bench-conv.sh [configs...]        e.g. scripts/bench-conv.sh tiny mnist cifar10
# BATCH (default 16; cifar10 uses BATCH_CIFAR, default 4), STEPS (median of, default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
configs=("${@:-tiny}")
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${TWEEDIE_CACHE:-$HOME/.cache/tweedie}/target}"
cargo build --release --bin bench >&2
bench="$CARGO_TARGET_DIR/release/bench"
log="$(mktemp)"
for cfg in "${configs[@]}"; do
  batch="${BATCH:-16}"
  [ "$cfg" = cifar10 ] && batch="${BATCH_CIFAR:-4}"
  "$bench" --config "$cfg" --mode conv --batch "$batch" --steps "${STEPS:-5}" --warmup 1 | tee -a "$log" >&2
done
python3 - "$log" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
for total in (r for r in rows if r["mode"] == "conv-total"):
    cfg, peak = total["config"], total["peak_gflops"]
    pct = lambda g: f"{g:.0f} ({100 * g / peak:.0f} %)"
    print(f"\n`{cfg}`, batch {total['batch']}, nominal peak {peak:.0f} GFLOP/s; GFLOP/s (% of peak)\n")
    print("| input | weight | stride | per forward | forward | input grad | weight grad | burn-flex forward | burn-flex fwd+grads |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["mode"] != "conv" or r["config"] != cfg:
            continue
        shape = lambda v: "×".join(str(x) for x in v)
        print(f"| {shape(r['input'])} | {shape(r['weight'])} | {r['stride'][0]} | {r['per_forward']} | "
              f"{pct(r['forward']['gflops'])} | {pct(r['input_grad']['gflops'])} | "
              f"{pct(r['weight_grad']['gflops'])} | {pct(r['burn_forward']['gflops'])} | "
              f"{pct(r['burn_train']['gflops'])} |")
    print(f"| **all, per U-Net pass** | | | | {total['forward_ms']} ms, {pct(total['forward_gflops'])} | "
          f"fwd + grads {total['train_ms']} ms, {pct(total['train_gflops'])} | | "
          f"{total['burn_forward_ms']} ms, {pct(total['burn_forward_gflops'])} | "
          f"{total['burn_train_ms']} ms, {pct(total['burn_train_gflops'])} |")
PY
rm -f "$log"
