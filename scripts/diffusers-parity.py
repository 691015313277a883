#!/usr/bin/env python3
"""Parity of Tweedie's U-Net with diffusers' UNet2DModel, both ways (PyPI's torch + diffusers,
CPU, float32).

Import: for the configurations of the DDPM authors' published models (google/ddpm-cifar10-32
and google/ddpm-celebahq-256 and their church, bedroom and cat siblings, which share the 256
config), build a randomly initialised UNet2DModel, save it as diffusers does, let Tweedie read
the folder (`sample eps`), and compare ε̂ on the same inputs at several t.

Export: train a small Tweedie model for a few steps, write it with `train export`, load it with
`UNet2DModel.from_pretrained` and `DDPMPipeline.from_pretrained`, and compare ε̂ the same way.

With --fixture DIR it instead writes the small committed fixture of the Rust test suite
(testdata/diffusers/): a reduced config with the same block types (attention included), its
weights, recorded ε̂, and a short DDPMScheduler trajectory from recorded noise.

    scripts/diffusers-parity.py [--bin target/release] [--skip-256]
    scripts/diffusers-parity.py --fixture testdata/diffusers
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

TOL = 1e-4

# The published models' config.json fields (UNet2DModel) and scheduler_config.json.
CIFAR10_32 = dict(
    sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
    block_out_channels=[128, 256, 256, 256],
    down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    act_fn="silu", attention_head_dim=None, center_input_sample=False, downsample_padding=0,
    flip_sin_to_cos=False, freq_shift=1, mid_block_scale_factor=1, norm_eps=1e-6,
    norm_num_groups=32, time_embedding_type="positional",
)
CELEBAHQ_256 = dict(
    CIFAR10_32, sample_size=256, block_out_channels=[128, 128, 256, 256, 512, 512],
    down_block_types=["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4,
)
FIXTURE = dict(
    CIFAR10_32, sample_size=8, layers_per_block=1, block_out_channels=[32, 32],
    down_block_types=["DownBlock2D", "AttnDownBlock2D"],
    up_block_types=["AttnUpBlock2D", "UpBlock2D"],
)
SCHEDULER = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                 variance_type="fixed_large", clip_sample=True, prediction_type="epsilon")
TIMESTEPS = [0, 250, 999]


def randomised(config, seed):
    """A UNet2DModel of `config` with random weights: PyTorch's default init, then every
    parameter perturbed, so that no layer is the identity or zero (the zero-init output layers
    of a fresh model would hide mistakes)."""
    torch.manual_seed(seed)
    model = UNet2DModel(**config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def inputs(config, n, seed):
    g = torch.Generator().manual_seed(seed)
    s, c = config["sample_size"], config["in_channels"]
    x = torch.randn(n, c, s, s, generator=g)
    return x


def aligned(model):
    """The model with every parameter copied into fresh memory: a file-backed load can leave
    tensors at odd offsets, and PyTorch's CPU kernels then take other code paths (float-level
    differences of ~1e-5 between two loads of the same numbers)."""
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()
    return model.eval()


def eps_diffusers(model, x, ts):
    with torch.no_grad():
        return torch.cat([model(x[i : i + 1], torch.tensor([t])).sample for i, t in enumerate(ts)])


def eps_tweedie(binary, checkpoint, x, ts, work):
    xin, out = os.path.join(work, "x.npy"), os.path.join(work, "eps.npy")
    np.save(xin, x.numpy().astype("<f4"))
    subprocess.run([os.path.join(binary, "sample"), "eps", "--checkpoint", checkpoint,
                    "--x", xin, "--t", ",".join(map(str, ts)), "--out", out],
                   check=True, stdout=subprocess.DEVNULL)
    return torch.from_numpy(np.load(out))


def check(name, a, b):
    err = (a - b).abs().max().item()
    status = "ok" if err <= TOL else "FAIL"
    print(f"| {name} | {tuple(a.shape)} | {err:.2e} | {status} |")
    return err <= TOL


def import_parity(binary, configs, work):
    ok = True
    for name, config, seed in configs:
        model = randomised(config, seed)
        folder = os.path.join(work, name)
        DDPMPipeline(unet=model, scheduler=DDPMScheduler(**SCHEDULER)).save_pretrained(folder)
        x = inputs(config, len(TIMESTEPS), seed + 1)
        ref = eps_diffusers(model, x, TIMESTEPS)
        got = eps_tweedie(binary, folder, x, TIMESTEPS, work)
        params = sum(p.numel() for p in model.parameters())
        ok &= check(f"import {name} ({params:,} parameters), t = {TIMESTEPS}", got, ref)
    return ok


def export_parity(binary, work):
    run = os.path.join(work, "tweedie-run")
    cfg = os.path.join(work, "small.toml")
    with open(cfg, "w") as f:
        f.write('kind = "diffusion-training"\nseed = 3\n[data]\ndataset = "mnist"\nlimit = 256\n'
                '[model]\npreset = "tiny"\nattn_resolutions = [14]\n[train]\nsteps = 60\nbatch_size = 4\n'
                'lr = 2e-3\nsample_every = 0\n')
    subprocess.run([os.path.join(binary, "train"), "--config", cfg, "--run-dir", run, "--quiet"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = os.path.join(work, "exported")
    subprocess.run([os.path.join(binary, "train"), "export", "--checkpoint", run, "--out", out],
                   check=True, stdout=subprocess.DEVNULL)
    unet = aligned(UNet2DModel.from_pretrained(out, subfolder="unet"))
    pipe = DDPMPipeline.from_pretrained(out)
    config = dict(sample_size=28, in_channels=1)
    x = inputs(config, len(TIMESTEPS), 7)
    ref = eps_tweedie(binary, run, x, TIMESTEPS, work)
    # A trained network's ε̂ is of order 1 (a fresh one's output layer starts at zero).
    assert ref.abs().max() > 0.1, f"the exported model's ε̂ is too small to compare: {ref.abs().max()}"
    ok = check("export tiny MNIST model (60 steps) → UNet2DModel.from_pretrained", eps_diffusers(unet, x, TIMESTEPS), ref)
    ok &= check("export → DDPMPipeline.from_pretrained(...).unet", eps_diffusers(aligned(pipe.unet), x, TIMESTEPS), ref)
    assert pipe.scheduler.config.num_train_timesteps == 1000
    # Round trip: the random CIFAR-10 model read by Tweedie and written back.
    folder = os.path.join(work, "cifar10-32")
    back = os.path.join(work, "round-trip")
    subprocess.run([os.path.join(binary, "train"), "export", "--checkpoint", folder, "--out", back],
                   check=True, stdout=subprocess.DEVNULL)
    original = aligned(UNet2DModel.from_pretrained(folder, subfolder="unet"))
    again = aligned(UNet2DModel.from_pretrained(back, subfolder="unet"))
    same = all(torch.equal(a, b) for a, b in zip(original.state_dict().values(), again.state_dict().values()))
    print(f"| cifar10-32: diffusers → Tweedie → diffusers, every weight bit-identical | | {0 if same else 'differs'} | {'ok' if same else 'FAIL'} |")
    ok &= same
    x = inputs(CIFAR10_32, len(TIMESTEPS), 9)
    ok &= check("cifar10-32: diffusers → Tweedie → diffusers, ε̂", eps_diffusers(again, x, TIMESTEPS),
                eps_diffusers(original, x, TIMESTEPS))
    return ok


def write_fixture(out):
    """The Rust test suite's fixture: a reduced model with every block type, its ε̂ at fixed
    inputs, and a 10-step DDPMScheduler trajectory (fixed_large, clip_sample) from recorded x_T
    and step noise."""
    os.makedirs(out, exist_ok=True)
    model = randomised(FIXTURE, 11)
    scheduler = DDPMScheduler(**SCHEDULER)
    DDPMPipeline(unet=model, scheduler=scheduler).save_pretrained(out)
    x = inputs(FIXTURE, len(TIMESTEPS), 12)
    eps = eps_diffusers(model, x, TIMESTEPS)
    scheduler.set_timesteps(10)
    g = torch.Generator().manual_seed(13)
    sample = torch.randn(2, 3, 8, 8, generator=g)
    x_init, noises, steps = sample.clone(), [], []
    for t in scheduler.timesteps:
        with torch.no_grad():
            out_eps = model(sample, t).sample
        state = g.get_state()
        noises.append(torch.randn(sample.shape, generator=g).flatten().tolist())
        g.set_state(state)
        sample = scheduler.step(out_eps, t, sample, generator=g).prev_sample
        steps.append(sample.flatten().tolist())
    ref = {
        "generated_by": "scripts/diffusers-parity.py --fixture (torch %s, diffusers %s)" % (
            torch.__version__, __import__("diffusers").__version__),
        "x": x.flatten().tolist(), "shape": list(x.shape), "t": TIMESTEPS,
        "eps": eps.flatten().tolist(),
        "trajectory": {"timesteps": [int(t) for t in scheduler.timesteps], "x_init": x_init.flatten().tolist(),
                       "shape": list(x_init.shape), "noise": noises, "x_after_each_step": steps},
    }
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f)
    size = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(out) for n in ns)
    print(f"wrote {out} ({size / 1024:.0f} KiB)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.environ.get("TWEEDIE_BIN", "target/release"))
    ap.add_argument("--skip-256", action="store_true", help="leave out the 256-pixel config")
    ap.add_argument("--fixture", help="write the Rust test fixture into this folder and stop")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    if a.fixture:
        write_fixture(a.fixture)
        return 0
    configs = [("cifar10-32", CIFAR10_32, 1)]
    if not a.skip_256:
        configs.append(("celebahq-256 (church, bedroom, cat share it)", CELEBAHQ_256, 2))
    print(f"torch {torch.__version__}, diffusers {__import__('diffusers').__version__}, tolerance {TOL}")
    print("| check | ε̂ shape | max abs error | |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        ok = import_parity(a.bin, configs, work)
        ok &= export_parity(a.bin, work)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
