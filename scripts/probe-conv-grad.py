"""Convolution gradients as burn derives them (input grad = transposed conv, weight grad = conv
over the batch axis) against libtorch's convolution_backward, for the tiny U-Net's conv shapes at
batch 16, one thread; prints ms per call and totals. Usage: python3 scripts/probe-conv-grad.py"""
import torch, time, torch.nn.functional as F
torch.set_num_threads(1)
def bench(f, n=5):
    f(); t=time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter()-t)/n*1000
B=16
shapes=[(1,32,28,3,1),(32,32,28,3,1),(32,32,28,3,2),(32,64,14,3,1),(64,64,14,3,1),(32,64,14,1,1),(64,64,14,1,1),(128,64,14,3,1),(128,64,14,1,1),(96,64,14,3,1),(64,64,14,3,1),(96,32,28,3,1),(96,32,28,1,1),(64,32,28,3,1),(32,1,28,3,1)]
tot={}
for (C,O,H,k,s) in shapes:
    p=k//2
    x=torch.randn(B,C,H,H); w=torch.randn(O,C,k,k)
    y=F.conv2d(x,w,stride=s,padding=p); g=torch.randn_like(y)
    fwd=lambda: F.conv2d(x,w,stride=s,padding=p)
    wn=lambda: torch.ops.aten.convolution_backward(g,x,w,None,[s,s],[p,p],[1,1],False,[0,0],1,[False,True,False])[1]
    xn=lambda: torch.ops.aten.convolution_backward(g,x,w,None,[s,s],[p,p],[1,1],False,[0,0],1,[True,False,False])[0]
    def wb():
        r=F.conv2d(x.transpose(0,1),g.transpose(0,1),padding=p,dilation=s).transpose(0,1)
        return r[:,:,:k,:k]
    op=H-((y.shape[2]-1)*s-2*p+k)
    xb=lambda: F.conv_transpose2d(g,w,stride=s,padding=p,output_padding=op)
    r=[bench(f) for f in (fwd,wn,wb,xn,xb)]
    for n,v in zip(("fwd","wn","wb","xn","xb"),r): tot[n]=tot.get(n,0)+v
    print((C,O,H,k,s),"fwd %.2f wgrad native %.2f burn %.2f | xgrad native %.2f burn %.2f"%tuple(r))
print({k:round(v,1) for k,v in tot.items()})
