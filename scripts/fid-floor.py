#!/usr/bin/env python3
"""The real-data FID floor at this data's size: the CIFAR-10 test images against the training
images, by Tweedie's `sample fid` and, when pytorch-fid is installed, by pytorch-fid's
`compute_statistics_of_path` and `calculate_frechet_distance` on the same images as PNGs, with
the same weights file.

    scripts/fid-floor.py --sample target/release/sample --weights FILE [--data DIR] [--n-test N]

`--data` holds CIFAR-10's binary batches (`test_batch*.bin[.gz]`, `data_batch*.bin[.gz]`; default
$TWEEDIE_DATA/cifar10). The reference is every training image there (the shared subset: 4,000),
the samples the first `--n-test` test images (default all: 1,000). Prints one JSON line: both
FIDs, their relative difference, Tweedie's KID, the seconds each took. Exits non-zero when the
FIDs differ by more than 1e-3 relative. Needs numpy and Pillow; torch and pytorch-fid for the
comparison.
"""
import argparse
import glob
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def cifar(pattern):
    """The images of every CIFAR-10 binary batch matching `pattern`, N×32×32×3 uint8."""
    files = [f for f in sorted(glob.glob(pattern)) if f.endswith((".bin", ".bin.gz"))]
    if not files:
        sys.exit(f"no CIFAR-10 files match {pattern}")
    rows = []
    for f in files:
        raw = (gzip.open if f.endswith(".gz") else open)(f, "rb").read()
        rows.append(np.frombuffer(raw, np.uint8).reshape(-1, 3073)[:, 1:])
    return np.concatenate(rows).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def pngs(images, folder):
    from PIL import Image

    os.makedirs(folder)
    for i, im in enumerate(images):
        Image.fromarray(im).save(os.path.join(folder, f"{i:05d}.png"))


def by_pytorch_fid(weights, a, b):
    import torch
    import pytorch_fid.fid_score as fs
    import pytorch_fid.inception as pfi

    pfi.load_state_dict_from_url = lambda *x, **k: torch.load(weights)
    model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    m1, s1 = fs.compute_statistics_of_path(a, model, 50, 2048, "cpu", 1)
    m2, s2 = fs.compute_statistics_of_path(b, model, 50, 2048, "cpu", 1)
    return float(fs.calculate_frechet_distance(m1, s1, m2, s2))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sample", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--data", default=os.path.join(os.environ.get("TWEEDIE_DATA", "data"), "cifar10"))
    p.add_argument("--n-test", type=int, default=0)
    a = p.parse_args()
    if a.n_test < 0:
        sys.exit(f"--n-test must be 0 (all) or positive, got {a.n_test}")
    test = cifar(os.path.join(a.data, "test_batch*.bin*"))
    train = cifar(os.path.join(a.data, "data_batch*.bin*"))
    if a.n_test:
        test = test[: a.n_test]
    out = {"n_test": len(test), "n_train": len(train)}
    with tempfile.TemporaryDirectory() as tmp:
        np.save(os.path.join(tmp, "test.npy"), test)
        clock = time.time()
        run = subprocess.run(
            [a.sample, "fid", "--samples", os.path.join(tmp, "test.npy"), "--reference",
             "cifar10", "--data-dir", a.data, "--weights", a.weights, "--no-cache", "--quiet"],
            capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"sample fid failed: {run.stderr.strip()}")
        lines = run.stdout.strip().splitlines()
        if not lines:
            sys.exit("sample fid printed nothing")
        ours = json.loads(lines[-1])
        out.update(tweedie_fid=ours["fid"], tweedie_kid=ours["kid"], kid_std=ours["kid_std"],
                   tweedie_seconds=round(time.time() - clock, 1))
        try:
            import pytorch_fid  # noqa: F401
        except ImportError:
            out.update(pytorch_fid=None, note="pytorch-fid not installed: not compared")
            print(json.dumps(out))
            return
        pngs(test, os.path.join(tmp, "test"))
        pngs(train, os.path.join(tmp, "train"))
        clock = time.time()
        theirs = by_pytorch_fid(a.weights, os.path.join(tmp, "test"), os.path.join(tmp, "train"))
        rel = abs(ours["fid"] - theirs) / max(abs(theirs), 1e-12)
        out.update(pytorch_fid=theirs, relative_difference=rel,
                   pytorch_fid_seconds=round(time.time() - clock, 1))
    print(json.dumps(out))
    if rel > 1e-3:
        sys.exit(f"FID differs from pytorch-fid's by {rel:.2e} relative (tolerance 1e-3)")


if __name__ == "__main__":
    main()
