#!/usr/bin/env bash
# FID's Inception-v3 on the CPU, side by side with pytorch-fid in one run: N random 32×32 RGB images
# (resized to 299 by both) through the full-size network with random weights (the file
# scripts/fid-parity.py writes: run it first), batches of 32, PASSES alternating passes each.
# Tweedie's time includes reading the weights; pytorch-fid's, building its model from them.
# Prints one JSON line per pass.
#   PYTHON=/path/to/python scripts/bench-inception.sh [N] [PASSES] [WEIGHTS]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-256}"; PASSES="${2:-2}"; W="${3:-/tmp/fid-parity/pt_inception-2015-12-05-6726825d.pth}"
PY="${PYTHON:-python3}"
BIN="${TWEEDIE_BIN:-${CARGO_TARGET_DIR:-target}/release}"
[ -n "${TWEEDIE_BIN:-}" ] || cargo build --release --bin sample >/dev/null
[ -f "$W" ] || { echo "no weights at $W: run scripts/fid-parity.py --sample $BIN/sample first" >&2; exit 1; }
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
"$PY" -c "import numpy as np; r = np.random.default_rng(0); np.save('$TMP/x.npy', (r.random(($N, 3, 32, 32)) * 2 - 1).astype(np.float32))"
cat > "$TMP/pfid_time.py" <<PY
import time, numpy as np, torch
import pytorch_fid.inception as pfi
t0 = time.time()
state = torch.load("$W")
pfi.load_state_dict_from_url = lambda *a, **k: state
model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
x = torch.from_numpy((np.load("$TMP/x.npy") + 1) / 2).float()
with torch.no_grad():
    for s in range(0, len(x), 32):
        model(x[s:s + 32])
print(time.time() - t0)
PY
for p in $(seq "$PASSES"); do
  /usr/bin/time -f "%e %M" -o "$TMP/t" "$BIN/sample" inception --images "$TMP/x.npy" --weights "$W" --out "$TMP/f.npy" --quiet
  read -r ts tm < "$TMP/t"
  /usr/bin/time -f "%e %M" -o "$TMP/p" "$PY" "$TMP/pfid_time.py" > "$TMP/inner" 2>/dev/null
  read -r _ pm < "$TMP/p"
  pt="$(tail -1 "$TMP/inner")"
  "$PY" -c "import json; print(json.dumps({'pass': $p, 'images': $N, 'tweedie_s': $ts, 'tweedie_images_per_s': $N / $ts, 'tweedie_peak_rss_mib': $tm / 1024, 'pytorch_fid_s': round($pt, 2), 'pytorch_fid_images_per_s': $N / $pt, 'pytorch_fid_peak_rss_mib': $pm / 1024}))"
done
