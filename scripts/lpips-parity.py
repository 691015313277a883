#!/usr/bin/env python3
"""LPIPS parity: Tweedie's `sample lpips` against the `lpips` package (Zhang et al. 2018).

Needs torch, torchvision and lpips (PyPI). Nothing is downloaded: AlexNet's trunk is drawn at random
(seeded) and saved in torchvision's state-dict format under its published name
(alexnet-owt-7be5be79.pth); the linear layers are the package's own published file
(lpips/weights/v0.1/alex.pth). The reference is `lpips.LPIPS(net="alex", pnet_rand=True)` with that
trunk loaded.

    scripts/lpips-parity.py --sample target/release/sample [--out DIR]
        full-size AlexNet on RGB 64×64 and 32×32 and gray 28×28 pairs; prints the largest
        relative difference and exits non-zero above 1e-4.
    scripts/lpips-parity.py --fixture testdata/lpips
        writes the small fixture `cargo test` checks (a narrow AlexNet of the same shape: channels
        4, 6, 8, 6, 6, run through the package's own forward pass).

Images below 32 pixels a side and gray images are Tweedie's choices, outside the package: a gray
image is repeated to RGB and a small one enlarged by the smallest integer factor reaching 32
(nearest neighbour). The script applies the same two steps before calling the package.
"""
import argparse
import importlib.metadata
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import torch
import torchvision
import lpips

TRUNK_FILE = "alexnet-owt-7be5be79.pth"
LINEAR_FILE = "alex.pth"
FEATURES = [0, 3, 6, 8, 10]  # torchvision's conv indices in alexnet.features


def prepare(x):
    """Tweedie's two steps outside the package: gray to RGB, small images enlarged."""
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    f = math.ceil(32 / min(x.shape[2], x.shape[3]))
    if f > 1:
        x = x.repeat_interleave(f, dim=2).repeat_interleave(f, dim=3)
    return x


def load_trunk(model, state):
    """Puts torchvision-named `features.N.*` tensors into lpips' sliced AlexNet."""
    for sl in [model.net.slice1, model.net.slice2, model.net.slice3, model.net.slice4, model.net.slice5]:
        for name, module in sl.named_children():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.data.copy_(state[f"features.{name}.weight"])
                module.bias.data.copy_(state[f"features.{name}.bias"])


def reference(trunk_state, linear_state, widths, a, b):
    model = lpips.LPIPS(net="alex", pnet_rand=True, pretrained=False, verbose=False)
    if widths != [64, 192, 384, 256, 256]:
        # A narrower AlexNet of the same shape: replace the convolutions and linear layers, keep
        # the package's forward pass (scaling, normalisation, linear layers, spatial average).
        cin = 3
        slices = [model.net.slice1, model.net.slice2, model.net.slice3, model.net.slice4, model.net.slice5]
        for sl, cout in zip(slices, widths):
            for name, module in list(sl.named_children()):
                if isinstance(module, torch.nn.Conv2d):
                    setattr(sl, name, torch.nn.Conv2d(cin, cout, module.kernel_size,
                                                      module.stride, module.padding))
            cin = cout
        model.lins = torch.nn.ModuleList([lpips.NetLinLayer(c, use_dropout=True) for c in widths])
        for l, lin in enumerate(model.lins):
            setattr(model, f"lin{l}", lin)
    load_trunk(model, trunk_state)
    model.load_state_dict({k: v for k, v in linear_state.items()}, strict=False)
    for l, lin in enumerate(model.lins):
        assert torch.equal(lin.model[1].weight, linear_state[f"lin{l}.model.1.weight"]), l
    model.eval()
    with torch.no_grad():
        d = model(prepare(a), prepare(b))
    return d.reshape(-1).double().numpy()


def random_trunk(widths, seed):
    torch.manual_seed(seed)
    net = torchvision.models.alexnet(weights=None)
    state = net.state_dict()
    cin = 3
    for idx, cout in zip(FEATURES, widths):
        w = state[f"features.{idx}.weight"]
        k = w.shape[2]
        # PyTorch's default (Kaiming-uniform) scale, at these widths.
        bound = 1 / math.sqrt(cin * k * k)
        state[f"features.{idx}.weight"] = (torch.rand(cout, cin, k, k) * 2 - 1) * bound * math.sqrt(3)
        state[f"features.{idx}.bias"] = (torch.rand(cout) * 2 - 1) * bound
        cin = cout
    if widths != [64, 192, 384, 256, 256]:
        state = {k: v for k, v in state.items() if k.startswith("features.")}
    return state


def images(shapes, seed):
    """Pairs of smooth random images on [−1, 1]: b is a perturbed a, so distances are moderate."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n, c, h, w in shapes:
        base = torch.rand(n, c, max(h // 4, 1), max(w // 4, 1), generator=g) * 2 - 1
        a = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
        b = (a + 0.3 * (torch.rand(n, c, h, w, generator=g) * 2 - 1)).clamp(-1, 1)
        out.append((a.contiguous(), b.contiguous()))
    return out


def package_linear():
    return torch.load(os.path.join(os.path.dirname(lpips.__file__), "weights/v0.1/alex.pth"),
                      map_location="cpu")


def parity(args):
    os.makedirs(args.out, exist_ok=True)
    widths = [64, 192, 384, 256, 256]
    trunk = random_trunk(widths, 0)
    torch.save(trunk, os.path.join(args.out, TRUNK_FILE))
    shutil.copy(os.path.join(os.path.dirname(lpips.__file__), "weights/v0.1/alex.pth"),
                os.path.join(args.out, LINEAR_FILE))
    linear = package_linear()
    worst = 0.0
    for i, (a, b) in enumerate(images([(4, 3, 64, 64), (6, 3, 32, 32), (4, 1, 28, 28)], 1)):
        want = reference(trunk, linear, widths, a, b)
        pa, pb = os.path.join(args.out, f"a{i}.npy"), os.path.join(args.out, f"b{i}.npy")
        np.save(pa, a.numpy())
        np.save(pb, b.numpy())
        res = subprocess.run([args.sample, "lpips", "--a", pa, "--b", pb, "--weights", args.out],
                             check=True, capture_output=True, text=True)
        got = np.array(json.loads(res.stdout.strip().splitlines()[-1])["lpips"])
        rel = float(np.max(np.abs(got - want) / np.abs(want)))
        worst = max(worst, rel)
        print(f"{tuple(a.shape)}: lpips {np.round(want, 5).tolist()}, Tweedie "
              f"{np.round(got, 5).tolist()}, largest relative difference {rel:.2e}")
    print(json.dumps({"largest_relative_difference": worst, "tolerance": 1e-4}))
    sys.exit(0 if worst <= 1e-4 else 1)


def fixture(args):
    os.makedirs(args.fixture, exist_ok=True)
    widths = [4, 6, 8, 6, 6]
    trunk = random_trunk(widths, 2)
    torch.manual_seed(3)
    linear = {f"lin{l}.model.1.weight": torch.rand(1, c, 1, 1) for l, c in enumerate(widths)}
    torch.save(trunk, os.path.join(args.fixture, TRUNK_FILE))
    torch.save(linear, os.path.join(args.fixture, LINEAR_FILE))
    cases = {}
    for name, (a, b) in zip(["rgb40", "gray28"], images([(3, 3, 40, 40), (2, 1, 28, 28)], 4)):
        np.save(os.path.join(args.fixture, f"{name}-a.npy"), a.numpy())
        np.save(os.path.join(args.fixture, f"{name}-b.npy"), b.numpy())
        cases[name] = reference(trunk, linear, widths, a, b).tolist()
    meta = {"lpips": cases, "widths": widths, "torch": torch.__version__,
            "lpips_package": importlib.metadata.version("lpips"),
            "written_by": "scripts/lpips-parity.py --fixture"}
    with open(os.path.join(args.fixture, "expected.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sample", help="Tweedie's sample binary (parity run)")
    p.add_argument("--out", default="/tmp/lpips-parity", help="folder for weights and images")
    p.add_argument("--fixture", help="write the small test fixture to this folder instead")
    args = p.parse_args()
    if args.fixture:
        fixture(args)
    elif args.sample:
        parity(args)
    else:
        p.error("give --sample (parity) or --fixture")


if __name__ == "__main__":
    main()
