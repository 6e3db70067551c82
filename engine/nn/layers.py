"""Sequence layers: every activation is ``[T, B, ...]`` with time leading.

Convolutions and linear layers fold time into the batch (one big call instead of T small ones).
Batch norm keeps the reference's per-timestep statistics in training mode, and dropout draws one mask
per sequence, so a sequence layer computes exactly what stepping the network T times would.
Image tensors are channels-last (``to_channels_last``): on CPUs and GPUs alike, convolutions on few
channels run several times faster in that layout, and every layer here preserves it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.nn import fused


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``[T, B, C, H, W]`` with C innermost in memory, so ``flatten(0, 1)`` is a channels-last view."""
    return x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, x.shape[:2])


class SeqConv2d(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x.flatten(0, 1))
        return y.unflatten(0, x.shape[:2])


class PerTimestepBatchNorm(torch.autograd.Function):
    """Train-mode batch norm with each timestep's own statistics, written into one output tensor.

    Forward: the same ATen kernels ``nn.BatchNorm2d`` runs per timestep (so the same numbers, and the running
    statistics updated once per timestep, in order), without T separate outputs and the stack that copies
    them together. Backward: for large layers one fused kernel over all timesteps (``fused.py``; gradients
    equal to float rounding, tested), else ATen's per timestep.
    """

    @staticmethod
    def forward(
        ctx,
        x,
        weight,
        bias,
        running_mean,
        running_var,
        momentum: float,
        eps: float,  # type: ignore[override]
        overwrite: bool = False,
    ):
        y = x if overwrite else torch.empty_like(x)  # statistics are taken before a timestep is written
        steps, channels = x.shape[0], x.shape[2]
        mean = x.new_empty(steps, channels, dtype=torch.float32)
        invstd = torch.empty_like(mean)
        for t in range(steps):
            torch.ops.aten.native_batch_norm.out(
                x[t],
                weight,
                bias,
                running_mean,
                running_var,
                True,
                momentum,
                eps,
                out=y[t],
                save_mean=mean[t],
                save_invstd=invstd[t],
            )
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight, mean, invstd = ctx.saved_tensors
        out = fused.batch_norm_backward(grad, x, weight, mean, invstd)  # large layers: one fused kernel
        if out is not None:
            return *out, None, None, None, None, None
        grad = fused.in_layout_of(grad, x)
        dx = torch.empty_like(x)
        dw, db = torch.zeros_like(weight), torch.zeros_like(weight)
        for t in range(x.shape[0]):
            _, dw_t, db_t = torch.ops.aten.native_batch_norm_backward.out(
                grad[t],
                x[t],
                weight,
                None,
                None,
                mean[t],
                invstd[t],
                True,
                ctx.eps,
                [True, True, True],
                out0=dx[t],
                out1=torch.empty_like(dw),
                out2=torch.empty_like(db),
            )
            dw += dw_t
            db += db_t
        return dx, dw, db, None, None, None, None, None


class SeqBatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor, *, overwrite: bool = False) -> torch.Tensor:
        """``overwrite``: ``x`` is a temporary nobody else reads, so without autograd on the CPU its memory
        takes the output (one activation less at the peak; the same numbers, tested)."""
        if self.training:
            self.num_batches_tracked += x.shape[0]
            overwrite = overwrite and not torch.is_grad_enabled() and x.device.type == "cpu"
            return PerTimestepBatchNorm.apply(
                x, self.weight, self.bias, self.running_mean, self.running_var, self.momentum, self.eps, overwrite
            )
        return super().forward(x.flatten(0, 1)).unflatten(0, x.shape[:2])


class TiledAvgPool2d(torch.autograd.Function):
    """Average pooling over non-overlapping k x k tiles, whose input gradient is the output gradient divided
    by k*k and repeated over each tile: one nearest-neighbour upsampling, which writes it once, where ATen's
    backward zero-fills it and then adds into it (the same numbers, tested)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, k: int) -> torch.Tensor:  # type: ignore[override]
        ctx.k = k
        return F.avg_pool2d(x, k)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        grad = grad.contiguous(memory_format=torch.channels_last) / ctx.k**2  # the input's layout
        return F.interpolate(grad, scale_factor=ctx.k, mode="nearest"), None


class SeqAvgPool2d(nn.AvgPool2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(0, 1)
        k = self.kernel_size
        tiled = (
            isinstance(k, int)
            and self.stride == k
            and not self.padding
            and not self.ceil_mode
            and flat.shape[-1] % k == 0
            and flat.shape[-2] % k == 0
            and flat.is_contiguous(memory_format=torch.channels_last)
            and torch.is_grad_enabled()
        )
        y = TiledAvgPool2d.apply(flat, k) if tiled else super().forward(flat)
        return y.unflatten(0, x.shape[:2])


class SeqDropout(nn.Dropout):
    """Dropout with one mask per sample, shared by all timesteps (kept between calls while ``carry`` is set,
    for a sequence fed one timestep per call)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p)
        self.carry = False
        self.mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        mask = self.mask if self.carry and self.mask is not None else F.dropout(torch.ones_like(x[:1]), self.p)
        self.mask = mask if self.carry else None
        return x * mask
