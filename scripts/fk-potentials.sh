#!/usr/bin/env bash
# FK steering's potentials on the two-mode Gaussian-mixture benchmark (experiments/gmm-2mode.toml,
# bootstrap proposal, resampling every step, the papers' plain Tweedie reward log p(y | x̂₀)):
# for each potential and K, the sliced-Wasserstein error over its Monte Carlo floor, the
# mode-weight error and log of the mean Ẑ against the exact log p(y). A Markdown table on stdout;
# the runs in out/fk-potentials/<potential>/.
#   scripts/fk-potentials.sh [K...]        (default: 4 16 64 256 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${TWEEDIE_BIN:-}" ] || cargo build --release --bin sample >/dev/null
BIN="${TWEEDIE_BIN:-${CARGO_TARGET_DIR:-target}/release}"
KS="${*:-4 16 64 256 1024}"
LIST="[$(echo $KS | sed 's/ /, /g')]"
OUT=out/fk-potentials
mkdir -p "$OUT"
POTENTIALS="difference max mean paper-max paper-sum paper-rt"
for p in $POTENTIALS; do
  sed -e "s/^potential = .*/potential = \"$p\"/" -e 's/^methods = .*/methods = ["fk"]/' \
    -e 's/^twist = .*/twist = "tweedie"/' -e "s/^particles = .*/particles = $LIST/" \
    -e 's/^fresh_y = .*/fresh_y = 0/' experiments/gmm-2mode.toml > "$OUT/$p.toml"
  "$BIN/sample" --config "$OUT/$p.toml" --out "$OUT/$p" --quiet > /dev/null
done
python3 - "$OUT" $POTENTIALS <<'PY'
import json, sys
out, pots = sys.argv[1], sys.argv[2:]
runs = {p: json.load(open(f"{out}/{p}/results.json")) for p in pots}
ks = [r["particles"] for r in runs[pots[0]]["results"]]
print(f"exact log p(y) = {runs[pots[0]]['log_evidence']:.3f}\n")
print("| potential | " + " | ".join(f"K = {k}: SW ÷ floor, mode TV, log Ẑ" for k in ks) + " |")
print("|---|" + "---|" * len(ks))
for p in pots:
    cells = [f"{r['sw'] / r['sw_floor']:.2f}, {r['mode_weight_error']:.3f}, {r['log_z']:.2f}"
             for r in runs[p]["results"]]
    print(f"| {p} | " + " | ".join(cells) + " |")
PY
