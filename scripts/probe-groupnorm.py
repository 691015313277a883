"""GroupNorm and SiLU as burn runs them (chains of elementwise ops under autodiff) against
PyTorch's fused kernels, forward + backward on one [16, 96, 28, 28] activation, one thread.
Also the folded form of core/src/unet/norm.rs. Usage: python3 scripts/probe-groupnorm.py"""
import torch, time, torch.nn.functional as F
torch.set_num_threads(1)
B,C,H,G=16,96,28,32
x=torch.randn(B,C,H,H,requires_grad=True); gam=torch.randn(C,requires_grad=True); bet=torch.randn(C,requires_grad=True)
def burn_gn(x):
    xr=x.reshape(B,G,-1); m=xr.mean(2,keepdim=True); c=xr-m; v=(c*c).mean(2,keepdim=True)
    n=c/torch.sqrt(v+1e-6)
    return n.reshape(B,C,H,H)*gam.reshape(1,C,1,1)+bet.reshape(1,C,1,1)
def mine(x):
    xr=x.reshape(B,G,-1); m=xr.mean(2,keepdim=True); c=xr-m; v=(c*c).mean(2,keepdim=True)
    r=torch.rsqrt(v+1e-6)  # [B,G,1]
    s=r.repeat_interleave(C//G,dim=1).reshape(B,C,1)*gam.reshape(1,C,1)
    return (c.reshape(B,C,-1)*s+bet.reshape(1,C,1)).reshape(B,C,H,H)
def native(x): return F.group_norm(x,G,gam,bet,1e-6)
g=torch.randn(B,C,H,H)
for name,f in [("burn chain",burn_gn),("tweedie folded",mine),("torch fused",native)]:
    def step():
        y=f(x); y.backward(g); x.grad=None; gam.grad=None; bet.grad=None
    step(); t=time.perf_counter()
    for _ in range(20): step()
    print(name, "%.2f ms"%((time.perf_counter()-t)/20*1000), (f(x)-native(x)).abs().max().item())
def silu_c(x): return x*torch.sigmoid(x)
for name,f in [("silu composite",silu_c),("silu native",F.silu)]:
    def step():
        y=f(x); y.backward(g); x.grad=None
    step(); t=time.perf_counter()
    for _ in range(20): step()
    print(name, "%.2f ms"%((time.perf_counter()-t)/20*1000))
