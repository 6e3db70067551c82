"""Leaky integrate-and-fire neuron with a surrogate gradient.

Semantics follow SNASNet (spikingjelly's LIFNode): ``V <- V + (X - V) / tau``, fire where ``V >= v_th``,
hard reset to 0 where it fired, the reset detached from the graph, ATan surrogate in the backward pass.

The neuron works on whole sequences: input ``[T, B, ...]``, output spikes of the same shape. Stepping
over T happens inside one module call, so the convolutions around it see all T*B samples at once.
Every call starts from rest unless ``carry`` is set (the reference's scoring carries membrane potentials
from one batch into the next). No neuron is registered anywhere, so none outlives its network.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ATan(torch.autograd.Function):
    """Heaviside step forward; ``alpha/2 / (1 + (pi/2 * alpha * x)^2)`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * atan_grad(x, ctx.alpha), None


def atan_grad(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Derivative of the smooth primitive ``atan(pi/2 * alpha * x) / pi + 1/2``."""
    return (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)


def lif_step(
    x: torch.Tensor, v: torch.Tensor, *, tau: float, v_th: float, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One timestep: charge, fire, hard reset. Returns ``(spike, v_next)``."""
    v = v + (x - v) / tau
    spike = ATan.apply(v - v_th, alpha)
    return spike, v * (1.0 - spike.detach())


class LIF(nn.Module):
    """LIF over a sequence ``[T, B, ...]``; state is reset at the start of every call.

    ``fanout`` says how many reference neurons this one stands for: a cell node feeding several conv
    edges gives them identical spikes, so it is computed once and counted ``fanout`` times by the score.
    """

    def __init__(self, tau: float = 4 / 3, v_th: float = 1.0, alpha: float = 2.0, fanout: int = 1) -> None:
        super().__init__()
        self.tau, self.v_th, self.alpha, self.fanout = tau, v_th, alpha, fanout
        self.carry = False
        self.v: torch.Tensor | None = None  # kept between calls only while ``carry`` is set

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.v if self.carry and self.v is not None else torch.zeros_like(x[0])
        if torch.is_grad_enabled():
            out = torch.empty_like(x)  # keeps x's memory layout, as stack would not
            for t in range(x.shape[0]):
                out[t], v = lif_step(x[t], v, tau=self.tau, v_th=self.v_th, alpha=self.alpha)
        else:
            out, v = self._forward_inference(x, v.clone())
        self.v = v.detach() if self.carry else None
        return out

    def _forward_inference(self, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same arithmetic as ``lif_step``, in place, for scoring thousands of candidates."""
        out = torch.empty_like(x)
        for t in range(x.shape[0]):
            v.add_(torch.sub(x[t], v).div_(self.tau))
            fired = v >= self.v_th
            out[t].copy_(fired)
            v.masked_fill_(fired, 0.0)
        return out, v

    def extra_repr(self) -> str:
        return f"tau={self.tau:.4g}, v_th={self.v_th}, alpha={self.alpha}, fanout={self.fanout}"
