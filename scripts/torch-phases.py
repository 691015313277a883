"""Where PyTorch's training step spends its time, phase by phase, on the reference model
(testdata/ref/ddpm_ref.py): the counterpart of `bench --mode train --phases`. CPU only (no device
synchronisation). Usage: python3 scripts/torch-phases.py [config] [batch] [steps]"""
import json, os, sys, time
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "testdata", "ref"))
import ddpm_ref as R  # noqa: E402

config = sys.argv[1] if len(sys.argv) > 1 else "tiny"
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 32
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 10
torch.manual_seed(0)
model = R.build_model(config)
cfg = R.CONFIGS[config]
sched = R.LinearSchedule(torch.device("cpu"))
x0 = torch.randn(batch, cfg["in_ch"], cfg["resolution"], cfg["resolution"])
opt = torch.optim.Adam(model.parameters(), lr=R.LR)
params = list(model.parameters())
ms = {}


def mark(phase, t0):
    t = time.perf_counter()
    ms[phase] = ms.get(phase, 0.0) + (t - t0) * 1e3
    return t


def step():
    t0 = time.perf_counter()
    t = torch.randint(0, sched.T, (batch,))
    eps = torch.randn_like(x0)
    x_t = sched.sqrt_abar[t].view(-1, 1, 1, 1) * x0 + sched.sqrt_1m_abar[t].view(-1, 1, 1, 1) * eps
    t0 = mark("data", t0)
    loss = F.mse_loss(model(x_t, t), eps)
    t0 = mark("forward", t0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    t0 = mark("backward", t0)
    torch.nn.utils.clip_grad_norm_(params, R.GRAD_CLIP)
    t0 = mark("clip", t0)
    opt.step()
    mark("optim", t0)


for _ in range(2):
    step()
ms.clear()
for _ in range(steps):
    step()
print(json.dumps({"impl": "torch", "config": config, "batch": batch,
       "phases_ms": {k: round(v / steps, 3) for k, v in ms.items()}}))
