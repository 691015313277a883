#!/usr/bin/env bash
# Side-by-side CPU benchmark: Tweedie's `bench` and the PyTorch reference (`ddpm_ref.py`) on the
# same machine, back to back, alternating, several passes; prints every JSON line, then a
# summary table of medians and ratios. Needs a Python with torch (PYTHON=..., default python3).
#   scripts/bench-vs-torch.sh [passes] [configs...]        e.g. scripts/bench-vs-torch.sh 3 tiny mnist
# SHARDS=2 passes --shards 2 to bench (one shard per core).
# BACKEND=tch times Tweedie on libtorch's kernels: it builds with the `tch` feature against that
# Python's torch (tch 0.22 wants torch 2.9.0) in its own target directory.
# AVX512=off times both sides without AVX-512 on a CPU that has it: Tweedie built with
# scripts/no-avx512.sh (its run-time detection answers no for AVX-512) in its own target directory,
# PyTorch with ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2 and MKL_ENABLE_INSTRUCTIONS=AVX2.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
REF="${REF:-testdata/ref/ddpm_ref.py}"
passes="${1:-3}"; shift || true
configs=("${@:-tiny}")
BACKEND="${BACKEND:-flex}"
SHARDS="${SHARDS:-1}"   # Tweedie's --shards (data parallelism across cores; PyTorch has none)
AVX512="${AVX512:-on}"
# TORCH_MALLOC=keep gives PyTorch's process the malloc thresholds Tweedie's binaries set for
# themselves (core/src/memory.rs), through glibc's tunables: the two sides on the same allocator.
torch_env=()
if [ "${TORCH_MALLOC:-default}" = keep ]; then
  torch_env=(env GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824)
fi
cache="${TWEEDIE_CACHE:-$HOME/.cache/tweedie}"
if [ "$AVX512" = off ]; then
  [ "$BACKEND" = flex ] || { echo "AVX512=off is for BACKEND=flex" >&2; exit 2; }
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target-no-avx512}"
  export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
  # The patches rewrite Cargo.lock's entries for those crates; the checkout's lock is put back.
  lock="$(mktemp)"; cp Cargo.lock "$lock"
  # shellcheck disable=SC2046  # the --config arguments, one word each
  cargo build --release --bin bench $(scripts/no-avx512.sh "$cache/no-avx512") >&2 || build=$?
  cp "$lock" Cargo.lock; rm -f "$lock"
  [ "${build:-0}" = 0 ] || exit "$build"
elif [ "$BACKEND" = tch ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target-tch}"
  torch_dir="$("$PYTHON" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
  PATH="$(dirname "$(command -v "$PYTHON")"):$PATH" LIBTORCH_USE_PYTORCH=1 \
    cargo build --release --bin bench --features tweedie-core/tch >&2
  export LD_LIBRARY_PATH="$torch_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
  cargo build --release --bin bench >&2
fi
bench="$CARGO_TARGET_DIR/release/bench"
batch="${BATCH:-32}"
log="$(mktemp)"
for cfg in "${configs[@]}"; do
  case "$cfg" in tiny) steps=10 ;; *) steps=4 ;; esac
  for mode in train sample; do
    for _ in $(seq "$passes"); do
      "${torch_env[@]}" "$PYTHON" "$REF" --config "$cfg" --device cpu --mode "$mode" --batch "$batch" \
        --steps "$steps" --warmup 2 | tail -1 | tee -a "$log"
      "$bench" --config "$cfg" --mode "$mode" --backend "$BACKEND" --batch "$batch" \
        --steps "$steps" --warmup 2 --shards "$SHARDS" | tee -a "$log"
    done
  done
done
# The machine's fp32 peak, for the fraction-of-peak column: cores × clock × FLOPs per cycle
# (two FMA pipes at the widest vector width: 64 with AVX-512, 32 with AVX2). PEAK_GFLOPS overrides.
mhz="$(awk -F: '/cpu MHz/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo 0)"
per_cycle=$(grep -qw avx512f /proc/cpuinfo 2>/dev/null && [ "$AVX512" != off ] && echo 64 || echo 32)
peak="${PEAK_GFLOPS:-$(awk -v c="$(nproc)" -v m="$mhz" -v f="$per_cycle" 'BEGIN { printf "%.1f", c * m / 1000 * f }')}"
"$PYTHON" - "$log" "$peak" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
peak = float(sys.argv[2])
keys = sorted({(r["config"], r["mode"], r["batch"]) for r in rows})
backend = next((r["device"] for r in rows if r["impl"] == "tweedie"), "?")
print(f"Tweedie backend: {backend}; machine fp32 peak {peak:.0f} GFLOP/s (conv + matmul FLOPs of "
      f"ddpm_ref.py's counter)")
print("| config | mode | batch | PyTorch img/s | Tweedie img/s | ratio | PyTorch GFLOP/s (% peak) "
      "| Tweedie GFLOP/s (% peak) | passes |")
print("|---|---|---|---|---|---|---|---|---|")
for k in keys:
    sel = lambda i: [r for r in rows if (r["config"], r["mode"], r["batch"]) == k and r["impl"] == i]
    med = {i: statistics.median(r["images_per_s"] for r in sel(i)) for i in ("torch", "tweedie")}
    gflop = next((r.get("gflop_per_image") for r in sel("torch") if r.get("gflop_per_image")), None)
    rate = lambda i: ("-" if not gflop else
                      f"{med[i] * gflop:.1f} ({100 * med[i] * gflop / peak:.1f} %)")
    print(f"| {k[0]} | {k[1]} | {k[2]} | {med['torch']:.1f} | {med['tweedie']:.1f} | "
          f"{med['tweedie'] / med['torch']:.2f} | {rate('torch')} | {rate('tweedie')} | {len(sel('torch'))} |")
PY
rm -f "$log"
