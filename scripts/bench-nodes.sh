#!/usr/bin/env bash
# Training across node servers on this machine's loopback (burn's remote backend): for the `tiny`
# and `mnist` models, one local device plus 0–3 nodes (`train node`), the seconds per step and the
# bytes each step moves (the loopback interface's counters, /proc/net/dev), as JSON lines.
# The nodes share this machine's cores, so this measures the protocol's overhead, not a speed-up.
#   scripts/bench-nodes.sh [STEPS]      (default 30; TWEEDIE_BIN: prebuilt binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${TWEEDIE_BIN:-}" ] || cargo build --release --bin train >/dev/null
BIN="${TWEEDIE_BIN:-${CARGO_TARGET_DIR:-target}/release}"
STEPS="${1:-30}"
OUT="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT
lo_bytes() { awk '/^ *lo:/ {print $2}' /proc/net/dev; }
PORTS=()
for i in 1 2 3; do
  "$BIN/train" node --bind 127.0.0.1:0 > "$OUT/node$i.log" 2>&1 &
  for _ in $(seq 50); do grep -q "serving" "$OUT/node$i.log" 2>/dev/null && break; sleep 0.1; done
  PORTS+=("$(sed -n 's/.* on 127.0.0.1:\([0-9]*\) .*/\1/p' "$OUT/node$i.log" | head -1)")
done
for model in tiny mnist; do
  case $model in
    tiny) file=experiments/mnist-tiny.toml; batch=32 ;;
    mnist) file=experiments/mnist.toml; batch=32 ;;
  esac
  for n in 0 1 2 3; do
    devices=flex
    for i in $(seq 1 "$n"); do devices="$devices,remote:127.0.0.1:${PORTS[$((i-1))]}"; done
    dev_flag=(--devices "$devices"); [ "$n" = 0 ] && dev_flag=()
    run="$OUT/$model-$n"
    before=$(lo_bytes)
    "$BIN/train" --config "$file" --steps "$STEPS" --run-dir "$run" --no-eval --quiet \
      --set train.batch_size=$batch --set train.log_every=1 --set train.sample_every=0 \
      --set train.checkpoint_every=0 --set train.shards=1 "${dev_flag[@]}" > "$run.log" 2>&1
    after=$(lo_bytes)
    python3 - "$run/metrics.jsonl" "$model" "$n" "$batch" "$STEPS" "$before" "$after" <<'PY'
import json, sys
path, model, n, batch, steps, before, after = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if '"loss"' in l]
# The first steps warm up (allocations, the nodes' first kernels): time the second half.
half = rows[len(rows) // 2:]
per_step = (half[-1]["seconds"] - half[0]["seconds"]) / max(len(half) - 1, 1)
print(json.dumps({"model": model, "nodes": int(n), "batch": int(batch),
                  "seconds_per_step": round(per_step, 4),
                  "bytes_per_step": round((int(after) - int(before)) / int(steps))}))
PY
  done
done
