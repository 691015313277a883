#!/usr/bin/env bash
# Prepares a build of Tweedie whose run-time CPU detection answers "no" for every AVX-512 feature,
# so the AVX2 + FMA kernels run on a machine that has AVX-512 (for timing the AVX2 path; BENCHMARKS
# "Without AVX-512"). Copies the crates that choose SIMD kernels at run time (faer, pulp, gemm-common,
# nano-gemm, macerator: our convolutions' GEMM, our loops' dispatch, burn-flex's matmul and
# element-wise ops) from cargo's registry into DIR and rewrites each `is_x86_feature_detected!(F)`
# to `(is_x86_feature_detected!(F) && !F.starts_with("avx512"))`. Prints the `cargo --config`
# arguments that patch them in; build into a target directory of its own.
#   scripts/no-avx512.sh DIR        e.g. cargo build --release $(scripts/no-avx512.sh /tmp/noavx512)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:?usage: scripts/no-avx512.sh DIR}"
mkdir -p "$dir"
meta="$(mktemp)"
trap 'rm -f "$meta"' EXIT
cargo metadata --format-version 1 --locked > "$meta"
python3 - "$meta" "$(cd "$dir" && pwd)" <<'PY' | tr '\n' ' '
import json, os, re, shutil, sys
meta, dir = json.load(open(sys.argv[1])), sys.argv[2]
wanted = {"faer", "pulp", "gemm-common", "nano-gemm", "macerator"}
pat = re.compile(r'(?:::)?(?:std::)?(?:arch::)?is_x86_feature_detected!\(\s*(\$\w+|"[^"]*")\s*\)')
done = set()
for p in meta["packages"]:
    name = p["name"]
    if name not in wanted or p["source"] is None or name in done:
        continue
    done.add(name)
    src, dst = os.path.dirname(p["manifest_path"]), os.path.join(dir, name)
    stamp = os.path.join(dst, ".no-avx512")
    if os.path.exists(stamp) and open(stamp).read() == src:
        # Patched before from the same source: left as is, so cargo does not rebuild it.
        print(f'--config patch.crates-io.{name}.path="{dst}"')
        continue
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    n = 0
    for root, _, files in os.walk(os.path.join(dst, "src")):
        for f in (f for f in files if f.endswith(".rs")):
            path = os.path.join(root, f)
            text, k = pat.subn(lambda m: '(::std::is_x86_feature_detected!(%s) && !%s.starts_with("avx512"))'
                               % (m.group(1), m.group(1)), open(path).read())
            if k:
                open(path, "w").write(text)
                n += k
    if n == 0:
        sys.exit(f"no run-time detection found in {name}")
    open(stamp, "w").write(src)
    print(f'--config patch.crates-io.{name}.path="{dst}"')
if done != wanted:
    sys.exit(f"not in the dependency graph: {sorted(wanted - done)}")
PY
