#!/usr/bin/env python3
"""Inception parity: Tweedie's `sample inception` against pytorch-fid's `InceptionV3` (pool3).

Needs torch, torchvision and pytorch-fid (PyPI). Nothing is downloaded: the FID Inception's weights
are drawn at random (seeded; batch-norm statistics too, so folding them is tested) and saved under
pytorch-fid's file name, and pytorch-fid is handed them in place of its download.

    scripts/fid-parity.py --sample target/release/sample [--out DIR]
    scripts/fid-parity.py --fixture testdata/inception
        writes the small fixture `cargo test` checks: the same network with every width divided
        by 16 (RGB input kept), through pytorch-fid's own forward pass.

Prints the largest difference of the 2048 pool3 features relative to their largest magnitude, per
image set (tolerance 1e-4); then the whole `sample fid --reference` pipeline against pytorch-fid's
`calculate_fid_given_paths` on two folders of 64 PNGs (folder reference; Tweedie's saved `.npz`
read by pytorch-fid; pytorch-fid's `save_fid_stats` `.npz` read by Tweedie), FID within 1e-3
relative; then FID and KID of `sample feature-distance` on two sets of 3000
random 2048-d features against pytorch-fid's `calculate_frechet_distance` and torchmetrics'
`poly_mmd` (KID on the whole sets: one subset of every row), tolerance 1e-3 relative. Exits
non-zero when one is exceeded.
"""
import argparse
import importlib.metadata
import json
import os
import subprocess
import sys

import numpy as np
import torch
import pytorch_fid.inception as pfi

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"


class Narrow(torch.nn.Module):
    """torchvision's BasicConv2d with both widths divided by 16 (the RGB input kept)."""

    def __init__(self, cin, cout, **kw):
        super().__init__()
        cin = cin if cin == 3 else cin // 16
        self.conv = torch.nn.Conv2d(cin, cout // 16, bias=False, **kw)
        self.bn = torch.nn.BatchNorm2d(cout // 16, eps=0.001)

    def forward(self, x):
        return torch.nn.functional.relu(self.bn(self.conv(x)))


def random_state(seed):
    """pytorch-fid's network with random weights, as the state dict its download would give."""
    torch.manual_seed(seed)
    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    state = net.state_dict()
    for k, v in state.items():
        if k.endswith("conv.weight"):
            fan_in = v[0].numel()
            state[k] = torch.randn_like(v) * (2.0 / fan_in) ** 0.5
        elif k.endswith("bn.weight"):
            state[k] = 0.5 + torch.rand_like(v)
        elif k.endswith("bn.bias"):
            state[k] = 0.1 * torch.randn_like(v)
        elif k.endswith("running_mean"):
            state[k] = 0.1 * torch.randn_like(v)
        elif k.endswith("running_var"):
            state[k] = 0.5 + torch.rand_like(v)
    return state


def fixture(folder):
    import torchvision.models.inception as tvi
    tvi.BasicConv2d = Narrow
    os.makedirs(folder, exist_ok=True)
    state = random_state(2)
    # The classifier (fc, 8 MB at full width) is not part of the features: left out of the file.
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")},
               os.path.join(folder, WEIGHTS_FILE))
    pfi.load_state_dict_from_url = lambda *a, **k: state
    model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 32, 32, generator=g)
    with torch.no_grad():
        want = model(x)[0].reshape(2, -1)
    np.save(os.path.join(folder, "images.npy"), (2 * x - 1).numpy())
    meta = {"features": want.tolist(), "torch": torch.__version__,
            "pytorch_fid": importlib.metadata.version("pytorch-fid"),
            "written_by": "scripts/fid-parity.py --fixture"}
    with open(os.path.join(folder, "expected.json"), "w") as f:
        json.dump(meta, f)
    print(f"wrote {folder}: features {tuple(want.shape)}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sample", help="Tweedie's sample binary")
    p.add_argument("--out", default="/tmp/fid-parity")
    p.add_argument("--fixture", help="write the small test fixture to this folder instead")
    args = p.parse_args()
    if args.fixture:
        return fixture(args.fixture)
    if not args.sample:
        p.error("give --sample (parity) or --fixture")
    os.makedirs(args.out, exist_ok=True)
    state = random_state(0)
    weights = os.path.join(args.out, WEIGHTS_FILE)
    torch.save(state, weights)
    pfi.load_state_dict_from_url = lambda *a, **k: state
    model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    for name, (n, h, w) in {"cifar32": (6, 32, 32), "odd45x37": (3, 45, 37)}.items():
        base = torch.rand(n, 3, max(h // 4, 1), max(w // 4, 1), generator=g)
        x = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
        x = (x + 0.2 * torch.rand(n, 3, h, w, generator=g)).clamp(0, 1)
        with torch.no_grad():
            want = model(x)[0].reshape(n, -1).double().numpy()
        images = os.path.join(args.out, f"{name}.npy")
        feats = os.path.join(args.out, f"{name}-features.npy")
        np.save(images, (2 * x - 1).numpy())
        subprocess.run([args.sample, "inception", "--images", images, "--weights", weights,
                        "--out", feats], check=True)
        got = np.load(feats).astype(np.float64)
        rel = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
        worst = max(worst, rel)
        print(f"{name} {tuple(x.shape)}: features mean {want.mean():.4f}, largest |f| "
              f"{np.abs(want).max():.4f}, largest difference / largest |f| {rel:.2e}")
    pipe_rel = pipeline(args, weights)
    fid_rel, kid_rel = distances(args)
    fid_rel = max(fid_rel, pipe_rel)
    print(json.dumps({"features_largest_relative_difference": worst, "tolerance": 1e-4,
                      "fid_relative_difference": fid_rel, "kid_relative_difference": kid_rel,
                      "fid_kid_tolerance": 1e-3}))
    sys.exit(0 if worst <= 1e-4 and fid_rel <= 1e-3 and kid_rel <= 1e-3 else 1)


def pipeline(args, weights):
    """`sample fid --reference` (folder and .npz) against pytorch-fid's own command-line path."""
    from PIL import Image
    from pytorch_fid.fid_score import calculate_fid_given_paths, save_fid_stats
    rng = np.random.default_rng(7)
    folders = {}
    for name, shift in (("samples", 0.0), ("reference", 0.15)):
        base = rng.random((64, 8, 8, 3))
        x = np.kron(base, np.ones((1, 4, 4, 1))) + shift * rng.random((64, 32, 32, 3))
        u8 = np.clip(np.round(x / (1 + shift) * 255), 0, 255).astype(np.uint8)
        folder = os.path.join(args.out, f"pipeline-{name}")
        os.makedirs(folder, exist_ok=True)
        for i, im in enumerate(u8):
            Image.fromarray(im).save(os.path.join(folder, f"{i:03d}.png"))
        np.save(folder + ".npy", u8)
        folders[name] = folder
    kw = dict(batch_size=32, device="cpu", dims=2048, num_workers=0)
    want = calculate_fid_given_paths([folders["samples"], folders["reference"]], **kw)
    ours_npz, theirs_npz = (os.path.join(args.out, f) for f in ("tweedie-stats.npz", "pytorch-fid-stats.npz"))
    for f in (ours_npz, theirs_npz):  # pytorch-fid refuses to overwrite: a rerun starts clean
        if os.path.exists(f):
            os.remove(f)
    save_fid_stats([folders["reference"], theirs_npz], **kw)

    def tweedie(reference, *extra):
        res = subprocess.run([args.sample, "fid", "--samples", folders["samples"] + ".npy", "--reference",
                              reference, "--weights", weights, "--no-cache", "--quiet", *extra],
                             check=True, capture_output=True, text=True)
        return json.loads(res.stdout.strip().splitlines()[-1])["fid"]

    got = {"folder": tweedie(folders["reference"], "--save-stats", ours_npz),
           "pytorch-fid's .npz": tweedie(theirs_npz)}
    got["Tweedie's .npz in pytorch-fid"] = calculate_fid_given_paths([folders["samples"], ours_npz], **kw)
    worst = max(abs(v - want) / abs(want) for v in got.values())
    print(f"sample fid --reference, 64 vs 64 PNGs: pytorch-fid {want:.6f}; " +
          ", ".join(f"{k} {v:.6f}" for k, v in got.items()) + f" (largest relative {worst:.1e})")
    return worst


def distances(args):
    from pytorch_fid.fid_score import calculate_frechet_distance
    from torchmetrics.image.kid import poly_mmd
    rng = np.random.default_rng(5)
    n, d = 3000, 2048
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    fa = np.maximum(rng.standard_normal((n, d)) @ mix, 0).astype(np.float32)
    fb = np.maximum(rng.standard_normal((n, d)) @ mix * 1.1 + 0.05, 0).astype(np.float32)
    pa, pb = os.path.join(args.out, "fa.npy"), os.path.join(args.out, "fb.npy")
    np.save(pa, fa)
    np.save(pb, fb)
    res = subprocess.run([args.sample, "feature-distance", "--a", pa, "--b", pb, "--kid-subsets", "1",
                          "--kid-subset-size", str(n)], check=True, capture_output=True, text=True)
    got = json.loads(res.stdout.strip().splitlines()[-1])
    a64, b64 = fa.astype(np.float64), fb.astype(np.float64)
    fid = calculate_frechet_distance(a64.mean(0), np.cov(a64, rowvar=False),
                                     b64.mean(0), np.cov(b64, rowvar=False))
    kid = float(poly_mmd(torch.from_numpy(a64), torch.from_numpy(b64)))
    fid_rel, kid_rel = abs(got["fid"] - fid) / abs(fid), abs(got["kid"] - kid) / abs(kid)
    print(f"FID: pytorch-fid {fid:.6f}, Tweedie {got['fid']:.6f} (relative {fid_rel:.1e}); "
          f"KID: torchmetrics {kid:.6e}, Tweedie {got['kid']:.6e} (relative {kid_rel:.1e})")
    return fid_rel, kid_rel


if __name__ == "__main__":
    main()
