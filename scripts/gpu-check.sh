#!/usr/bin/env bash
# One command for a machine with a GPU: is Tweedie's GPU path (burn-wgpu) fast and right there?
#   1. `bench` on wgpu for the tiny, mnist and cifar10 U-Nets (train batch 128, sample batch 256,
#      the PyTorch reference's shapes), and the reference itself (testdata/ref/ddpm_ref.py) on the
#      same GPU when a Python with CUDA torch is present, with the ratio;
#   2. a timed MNIST training run (the `mnist` U-Net, TRAIN_SECONDS of training), then 1000
#      samples (DDIM, 50 steps) and their classifier-FID against the MNIST test set;
# and prints one table. About 8 minutes on a data-centre GPU.
#
# It runs prebuilt binaries, nothing is compiled here. Build them once (anywhere with the same
# OS; ~35 min on 2 cores) and carry target/release/{bench,train,sample} to the GPU machine:
#     cargo build --release --features tweedie-train/wgpu --bin bench --bin train --bin sample
#
#   scripts/gpu-check.sh            the full check
#   scripts/gpu-check.sh --quick    tiny shapes and a 60 s run: for a software Vulkan device
#                                   (Mesa's lavapipe, `apt-get install mesa-vulkan-drivers`)
# Environment: TWEEDIE_BIN (the binaries; default target/release), OUT (default out/gpu-check),
# TRAIN_SECONDS (default 180), PYTHON (default python3), TWEEDIE_DATA or data/mnist (MNIST IDX).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = --quick ] && quick=1
BIN="${TWEEDIE_BIN:-target/release}"
OUT="${OUT:-out/gpu-check}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
log="$OUT/bench.jsonl"
: >"$log"
t_start=$(date +%s)

for b in bench train sample; do
  if [ ! -x "$BIN/$b" ]; then
    echo "error: $BIN/$b is missing; build it with" >&2
    echo "  cargo build --release --features tweedie-train/wgpu --bin bench --bin train --bin sample" >&2
    echo "and set TWEEDIE_BIN to the folder that holds it" >&2
    exit 1
  fi
done

# wgpu opens the Vulkan loader (libvulkan.so.1) with dlopen at run time; without it wgpu falls
# back to OpenGL or finds no adapter at all.
if ! { ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; } &&
   ! ls ${LD_LIBRARY_PATH//:/ } 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
  cat >&2 <<'EOF'
warning: no Vulkan loader (libvulkan.so.1) found. wgpu needs it to reach the GPU through Vulkan:
  - Debian/Ubuntu: apt-get install libvulkan1 (the NVIDIA driver brings its own ICD,
    /usr/share/vulkan/icd.d/nvidia_icd.json or /etc/vulkan/icd.d/nvidia_icd.json);
  - no package manager: copy libvulkan.so.1 from a machine of the same distribution into a
    folder, run with LD_LIBRARY_PATH=that/folder, and point VK_ICD_FILENAMES at the driver's
    ICD file if the loader does not find it (nvidia_icd.json names libGLX_nvidia.so.0).
Going on: wgpu will try its other graphics APIs.
EOF
fi

# The adapter bench reports is the first thing to read: a "llvmpipe" or "lavapipe" device is the
# CPU, not the GPU.
if ! "$BIN/bench" --backend wgpu --config tiny --mode sample --batch 1 --steps 1 --warmup 0 \
    >"$OUT/probe.json" 2>"$OUT/probe.err"; then
  echo "error: the wgpu backend did not start:" >&2
  tail -5 "$OUT/probe.err" >&2
  exit 1
fi

# Which adapter wgpu will see, where the tools to ask are present.
{ vulkaninfo --summary 2>/dev/null | grep -m1 deviceName | sed 's/.*= //' ||
  nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true; } >"$OUT/adapter.txt"

torch_cuda=0
if "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  torch_cuda=1
fi

# --quick: the same pipeline on tiny shapes, the classifier and its FID on the CPU (flex), so that
# a software Vulkan device finishes in minutes. The FID of 16 samples only shows the path works.
if [ "$quick" = 1 ]; then
  configs=(tiny); train_batch=8; sample_batch=16; steps=3; warmup=1
  TRAIN_SECONDS="${TRAIN_SECONDS:-60}"; n_samples=16; ddim_steps=10; preset=tiny; data_batch=16
  aux=flex
else
  configs=(tiny mnist cifar10); train_batch=128; sample_batch=256; steps=10; warmup=3
  TRAIN_SECONDS="${TRAIN_SECONDS:-180}"; n_samples=1000; ddim_steps=50; preset=mnist; data_batch=128
  aux=wgpu
fi

for cfg in "${configs[@]}"; do
  for mode in train sample; do
    batch=$([ "$mode" = train ] && echo "$train_batch" || echo "$sample_batch")
    echo "bench: $cfg $mode batch $batch" >&2
    "$BIN/bench" --backend wgpu --config "$cfg" --mode "$mode" --batch "$batch" \
      --steps "$steps" --warmup "$warmup" | tail -1 >>"$log" ||
      echo "{\"impl\": \"tweedie\", \"config\": \"$cfg\", \"mode\": \"$mode\", \"batch\": $batch, \"error\": true}" >>"$log"
    if [ "$torch_cuda" = 1 ]; then
      "$PYTHON" testdata/ref/ddpm_ref.py --device cuda --config "$cfg" --mode "$mode" \
        --batch "$batch" --steps "$steps" --warmup "$warmup" | tail -1 >>"$log" || true
    fi
  done
done

# The timed run: the `mnist` U-Net (or `tiny` with --quick) on MNIST for TRAIN_SECONDS, with a
# short warm-up and an EMA that follows a short run (the preset's 5000-step warm-up and 0.9999
# decay are for 800k steps).
run="$OUT/mnist-$(date +%Y%m%d-%H%M%S)"
cat >"$OUT/mnist-timed.toml" <<EOF
kind = "diffusion-training"
seed = 0
run_dir = "$run"
[data]
dataset = "mnist"
[model]
preset = "$preset"
[diffusion]
schedule = "linear"
timesteps = 1000
[train]
steps = 1000000
batch_size = $data_batch
lr = 2e-4
warmup_steps = 100
grad_clip = 1.0
ema_decay = 0.999
ema_warmup = true
checkpoint_every = 1000000
log_every = 50
sample_every = 0
EOF
echo "training $preset for ${TRAIN_SECONDS}s into $run" >&2
"$BIN/train" --config "$OUT/mnist-timed.toml" --backend wgpu --time-limit "$TRAIN_SECONDS" \
  --no-eval --quiet | tee "$OUT/train.txt"
"$BIN/sample" --checkpoint "$run" --backend wgpu --sampler ddim --steps "$ddim_steps" --n "$n_samples" \
  --seed 1 --out "$OUT/samples" --quiet 2>&1 | tail -2 >&2
if [ ! -d checkpoints/mnist-classifier ]; then
  echo "training the FID classifier (experiments/mnist-classifier.toml)" >&2
  "$BIN/train" --config experiments/mnist-classifier.toml --backend "$aux" --quiet >&2
fi
"$BIN/sample" fid --samples "$OUT/samples/samples.npy" --backend "$aux" >"$OUT/fid.json"

"$PYTHON" - "$log" "$OUT" "$run" "$(( $(date +%s) - t_start ))" <<'PY'
import json, pathlib, sys
log, out, run, total = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]), sys.argv[4]
rows = [json.loads(l) for l in open(log) if l.startswith("{")]
print(f"wgpu adapter: {(out / 'adapter.txt').read_text().strip() or 'unknown'}")
print("| config | mode | batch | Tweedie wgpu img/s | PyTorch CUDA img/s | ratio |")
print("|---|---|---|---|---|---|")
keys = []
for r in rows:
    k = (r["config"], r["mode"], r["batch"])
    if k not in keys:
        keys.append(k)
for k in keys:
    get = lambda impl: next((r for r in rows if (r["config"], r["mode"], r["batch"]) == k
                             and r.get("impl") == impl and "images_per_s" in r), None)
    tw, pt = get("tweedie"), get("torch")
    tws = f"{tw['images_per_s']:.1f}" if tw else "failed"
    pts = f"{pt['images_per_s']:.1f}" if pt else "-"
    ratio = f"{tw['images_per_s'] / pt['images_per_s']:.2f}" if tw and pt else "-"
    print(f"| {k[0]} | {k[1]} | {k[2]} | {tws} | {pts} | {ratio} |")
metrics = [json.loads(l) for l in open(run / "metrics.jsonl") if l.strip()]
steps = [m for m in metrics if "loss" in m]
fid = json.loads((out / "fid.json").read_text())
last = steps[-1] if steps else {}
print(f"\ntimed MNIST run ({run}): {last.get('step', 0)} steps in {last.get('seconds', 0):.0f} s, "
      f"last logged loss {last.get('loss', float('nan')):.4f}; "
      f"classifier-FID of {fid.get('n_samples', '?')} DDIM samples: "
      f"{fid.get('classifier_fid', float('nan')):.1f} "
      f"(samples: {out / 'samples' / 'grid.png'})")
print(f"total {total} s")
PY
