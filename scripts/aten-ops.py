"""Writes core/src/kernel/aten_ops.pt, a TorchScript module whose methods call libtorch's native
GroupNorm and convolution backward kernels, which tch 0.22 does not bind. Tweedie's LibTorch backend
(`--features tweedie-core/tch`) loads it with tch's CModule. The archive is TorchScript source:
    unzip -p core/src/kernel/aten_ops.pt '*/code/__torch__.py'
Regenerate it with the torch that tch links (2.9.0):
    python3 scripts/aten-ops.py core/src/kernel/aten_ops.pt"""
import sys
from typing import List, Tuple

import torch
from torch import Tensor


class AtenOps(torch.nn.Module):
    @torch.jit.export
    def group_norm_backward(self, dy: Tensor, x: Tensor, mean: Tensor, rstd: Tensor,
                            gamma: Tensor, groups: int) -> Tuple[Tensor, Tensor, Tensor]:
        n, c, h, w = x.shape
        dx, dgamma, dbeta = torch.ops.aten.native_group_norm_backward(
            dy, x, mean, rstd, gamma, n, c, h * w, groups, [True, True, True])
        return dx, dgamma, dbeta

    @torch.jit.export
    def conv2d_backward(self, dy: Tensor, x: Tensor, w: Tensor, stride: List[int],
                        padding: List[int], dilation: List[int], groups: int,
                        needed: List[bool]) -> Tuple[Tensor, Tensor, Tensor]:
        dx, dw, db = torch.ops.aten.convolution_backward(
            dy, x, w, [w.shape[0]], stride, padding, dilation, False, [0, 0], groups, needed)
        return dx, dw, db

    def forward(self, x: Tensor) -> Tensor:
        return x


if __name__ == "__main__":
    torch.jit.script(AtenOps()).save(sys.argv[1])
