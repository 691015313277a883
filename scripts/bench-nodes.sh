#!/usr/bin/env bash
# Training across node servers on this machine's loopback (burn's remote backend): for the `tiny`
# and `mnist` models, one local device plus 0–3 nodes (`train node`), as JSON lines:
#   seconds_per_step, bytes_per_step (the loopback interface's counters, /proc/net/dev);
#   where the time goes: the step's phases (data, backward = every device's forward and
#   backward, clip, optim; `bench --phases`), the local shard's and the slowest node shard's
#   milliseconds, and node_fixed_ms: a node shard's milliseconds when each device gets one image,
#   which is the part of a step that does not grow with the batch (the weights sent, the
#   gradients back, one message per operation).
# The nodes share this machine's cores, so this measures the protocol's overhead, not a speed-up.
#   scripts/bench-nodes.sh [STEPS]      (default 20; TWEEDIE_BIN: prebuilt binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${TWEEDIE_BIN:-}" ] || cargo build --release --bin train --bin bench >/dev/null
BIN="${TWEEDIE_BIN:-${CARGO_TARGET_DIR:-target}/release}"
STEPS="${1:-20}"
WARMUP=2
BATCH=32
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
  for n in 0 1 2 3; do
    devices=flex
    for i in $(seq 1 "$n"); do devices="$devices,remote:127.0.0.1:${PORTS[$((i-1))]}"; done
    before=$(lo_bytes)
    "$BIN/bench" --config "$model" --devices "$devices" --batch $BATCH --steps "$STEPS" \
      --warmup $WARMUP --phases > "$OUT/full.json"
    after=$(lo_bytes)
    echo '{}' > "$OUT/one.json"
    [ "$n" = 0 ] || "$BIN/bench" --config "$model" --devices "$devices" --batch $((n + 1)) \
      --steps "$STEPS" --warmup $WARMUP --phases > "$OUT/one.json"
    python3 - "$OUT/full.json" "$OUT/one.json" "$model" "$n" $((STEPS + WARMUP)) "$before" "$after" <<'PY'
import json, sys
full, one, model, n, steps, before, after = sys.argv[1:]
full, one = json.load(open(full)), json.load(open(one))
shard = lambda d: d["forward_ms"] + d["backward_ms"]
devices = full.get("devices_ms", [])
nodes = [shard(d) for d in devices[1:]]
print(json.dumps({
    "model": model, "nodes": int(n), "batch": full["batch"],
    "seconds_per_step": round(full["ms_per_step"] / 1e3, 4),
    "bytes_per_step": round((int(after) - int(before)) / int(steps)),
    "phases_ms": full["phases_ms"],
    "local_shard_ms": round(shard(devices[0]), 1) if devices else None,
    "node_shard_ms": round(max(nodes), 1) if nodes else None,
    "node_fixed_ms": round(max(shard(d) for d in one["devices_ms"][1:]), 1) if nodes else None,
}))
PY
  done
done
