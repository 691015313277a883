#!/usr/bin/env bash
# Faults a user (or the machine) can inflict on a training run, and what must survive them.
#   scripts/fault-test.sh [KILLS]       (default 8; TWEEDIE_BIN=dir of prebuilt binaries)
#
# 1. SIGKILL: a short MNIST run (the tiny model, 40 steps, a checkpoint every 4) is killed at
#    random moments KILLS times and resumed each time until it finishes; it must end exactly
#    where an uninterrupted run ends: the same logged losses, learning rates and gradient norms
#    at every step, and the same samples from its EMA and from its raw weights (the .bpk bytes
#    carry burn's random parameter ids, so they are not what is compared).
# 2. A full disk: the run directory on a small tmpfs is filled while the step-20 checkpoint is
#    written; the run must stop with one line, leave step 10 and `latest` intact and no
#    temporary behind, and resume to the same result once space returns. Needs root to mount a
#    tmpfs; elsewhere this part says it was skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS="${1:-8}"
if [ -z "${TWEEDIE_BIN:-}" ]; then
  cargo build --release --bin train --bin sample
  TWEEDIE_BIN="${CARGO_TARGET_DIR:-target}/release"
fi
TRAIN="$TWEEDIE_BIN/train"
SAMPLE="$TWEEDIE_BIN/sample"
WORK="$(mktemp -d)"
MNT="$WORK/small-disk"
cleanup() {
  if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT" || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# Runs a command that must succeed, keeping its chatter unless it fails.
ok() { "$@" >/dev/null 2>"$WORK/log" || fail "$* failed: $(cat "$WORK/log")"; }

cat > "$WORK/fault.toml" <<'EOF'
kind = "diffusion-training"
seed = 7
[data]
dataset = "mnist"
limit = 2000
[model]
preset = "tiny"
precondition = true
[train]
steps = 40
batch_size = 8
shards = 2
lr = 1e-3
warmup_steps = 5
loss_weighting = "precond"
ema_decay = 0.9
checkpoint_every = 4
keep_last = 2
log_every = 1
sample_every = 0
EOF

# The logged (step, loss, lr, grad_norm) of a run, one per line; `seconds` differs by design.
losses() {
  python3 -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "loss" in r:
        print(r["step"], repr(r["loss"]), repr(r["lr"]), repr(r["grad_norm"]))
' "$1"
}

# Samples of a run, from its EMA and from its raw weights, into $2/{ema,raw}.
samples() {
  ok "$SAMPLE" --checkpoint "$1" --sampler ddim --steps 10 --n 8 --seed 3 --out "$2/ema" --quiet
  ok "$SAMPLE" --checkpoint "$1" --sampler ddim --steps 10 --n 8 --seed 3 --raw-weights --out "$2/raw" --quiet
}

same_run() { # $1 $2: run directories that must have ended identically
  diff <(losses "$1/metrics.jsonl") <(losses "$2/metrics.jsonl") >/dev/null ||
    fail "$2: logged losses differ from $1"
  samples "$1" "$WORK/s1"
  samples "$2" "$WORK/s2"
  for w in ema raw; do
    cmp -s "$WORK/s1/$w/samples.npy" "$WORK/s2/$w/samples.npy" ||
      fail "$2: samples from the $w weights differ from $1's"
  done
  rm -rf "$WORK/s1" "$WORK/s2"
}

echo "== 1. uninterrupted reference run"
t0=$(date +%s.%N)
ok "$TRAIN" --config "$WORK/fault.toml" --run-dir "$WORK/straight" --quiet
# Kills land at random moments within the first 5-15 % of a whole run's wall time, so that all
# KILLS of them happen before the run can finish however fast this machine is.
DURATION=$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$(date +%s.%N)")

echo "== 1. the same run killed $KILLS times with SIGKILL"
RUN="$WORK/killed"
kills=0
while :; do
  if [ -f "$RUN/latest" ]; then
    args=(--resume "$RUN")
  elif [ -d "$RUN" ]; then
    args=(--config "$WORK/fault.toml" --run-dir "$RUN" --restart) # killed before its first checkpoint
  else
    args=(--config "$WORK/fault.toml" --run-dir "$RUN")
  fi
  if [ "$kills" -ge "$KILLS" ]; then
    ok "$TRAIN" "${args[@]}" --quiet
    break
  fi
  "$TRAIN" "${args[@]}" --quiet >/dev/null 2>"$WORK/err" &
  pid=$!
  sleep "$(python3 -c 'import random, sys; d = float(sys.argv[1]); print(round(max(0.2, random.uniform(0.05, 0.15) * d), 2))' "$DURATION")"
  if kill -9 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || true
    kills=$((kills + 1))
    echo "   kill $kills at $(python3 -c 'import sys; print(open(sys.argv[1]).read().strip())' "$RUN/latest" 2>/dev/null || echo 'no checkpoint yet')"
  else
    wait "$pid" || fail "a resumed run failed: $(cat "$WORK/err")"
    break
  fi
done
rm -rf "$RUN".old-* # restarts of runs killed before their first checkpoint
same_run "$WORK/straight" "$RUN"
echo "   ok: identical losses and samples (EMA and raw) after $kills kills"

echo "== 2. a full disk during a checkpoint write"
mkdir -p "$MNT"
if ! mount -t tmpfs -o size=40m tmpfs "$MNT" 2>/dev/null; then
  echo "   skipped: cannot mount a tmpfs here (needs root)"
  echo "PASS (SIGKILL part; disk-full part skipped)"
  exit 0
fi
DISK="$MNT/run"
sed -e 's/^steps = 40/steps = 20/' -e 's/^checkpoint_every = 4/checkpoint_every = 10/' \
  "$WORK/fault.toml" > "$WORK/disk.toml"
ok "$TRAIN" --config "$WORK/disk.toml" --run-dir "$DISK" --steps 10 --quiet
# Leave about 3 MB: the metrics lines fit, the ~10 MB checkpoint of step 20 does not.
free_kb=$(df -k --output=avail "$MNT" | tail -1)
dd if=/dev/zero of="$MNT/filler" bs=1k count=$((free_kb - 3072)) status=none 2>/dev/null || true
if "$TRAIN" --resume "$DISK" --steps 20 --quiet >/dev/null 2>"$WORK/err"; then
  fail "the run finished on a full disk"
fi
grep '^error:' "$WORK/err" > "$WORK/err1" || true
[ "$(wc -l < "$WORK/err1")" -eq 1 ] || fail "not one error line on a full disk: $(cat "$WORK/err")"
[ "$(grep -o 'No space left on device' "$WORK/err" | wc -l)" -eq 1 ] ||
  fail "the OS error is not named exactly once: $(cat "$WORK/err")"
[ "$(cat "$DISK/latest")" = "step-00000010" ] || fail "latest moved: $(cat "$DISK/latest")"
if ls -a "$DISK" | grep -q '\.tmp-'; then fail "a temporary was left behind: $(ls -a "$DISK")"; fi
echo "   ok: $(cat "$WORK/err1")"
echo "      step 10 and latest intact, no temporary left"
rm "$MNT/filler"
ok "$TRAIN" --resume "$DISK" --steps 20 --quiet
ok "$TRAIN" --config "$WORK/disk.toml" --run-dir "$WORK/straight20" --quiet
same_run "$WORK/straight20" "$DISK"
echo "   ok: resumed once space returned, identical to an uninterrupted run"
echo "PASS"
