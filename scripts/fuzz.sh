#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for SECONDS each (default 120) and prints one line per
# target: inputs run, coverage, and whether anything was found. Needs cargo-fuzz (cargo install
# cargo-fuzz) and a nightly compiler, or RUSTC_BOOTSTRAP=1 on stable (set below); the first build
# instruments burn too (about 40 minutes on 2 cores). Limits: any single allocation over 2 GiB or
# an RSS over 4 GiB counts as a failure, as a panic does. Findings land in fuzz/artifacts/<target>/
# and belong in testdata/fuzz-regressions/ (train/tests/readers.rs replays them).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1
SECONDS_EACH="${1:-120}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  mapfile -t TARGETS < <(cargo fuzz list)
fi
if [ ! -d corpus/weights ]; then
  (cd .. && cargo test --release -p tweedie-train --test readers -- --ignored write_fuzz_seeds >/dev/null)
fi
cargo fuzz build -O >/dev/null 2>&1
printf '| target | inputs run | coverage (edges) | seconds | found |\n|---|---|---|---|---|\n'
for t in "${TARGETS[@]}"; do
  log="$(mktemp)"
  set +e
  cargo fuzz run -O "$t" -- -max_total_time="$SECONDS_EACH" -malloc_limit_mb=2048 \
    -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1
  status=$?
  set -e
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
  found="nothing"
  if [ "$status" -ne 0 ]; then
    found="$(grep -m1 -E 'ERROR|panicked|malloc' "$log" | cut -c1-120) (exit $status; fuzz/artifacts/$t/)"
  fi
  printf '| %s | %s | %s | %s | %s |\n' "$t" "${runs:-?}" "${cov:-?}" "$SECONDS_EACH" "$found"
  rm -f "$log"
done
