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


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``[T, B, C, H, W]`` with C innermost in memory, so ``flatten(0, 1)`` is a channels-last view."""
    return x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, x.shape[:2])


class SeqConv2d(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x.flatten(0, 1))
        return y.unflatten(0, x.shape[:2])


class SeqBatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return torch.stack([super(SeqBatchNorm2d, self).forward(x_t) for x_t in x.unbind(0)])
        return super().forward(x.flatten(0, 1)).unflatten(0, x.shape[:2])


class SeqAvgPool2d(nn.AvgPool2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(0, 1)).unflatten(0, x.shape[:2])


class SeqDropout(nn.Dropout):
    """Dropout with one mask per sample, shared by all timesteps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        mask = F.dropout(torch.ones_like(x[:1]), self.p, training=True)
        return x * mask
