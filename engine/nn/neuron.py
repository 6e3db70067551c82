"""Leaky integrate-and-fire neuron with a surrogate gradient.

Semantics follow SNASNet (spikingjelly's LIFNode): ``V <- V + (X - V) / tau``, fire where ``V >= v_th``,
hard reset to 0 where it fired, the reset detached from the graph, ATan surrogate in the backward pass.

The neuron works on whole sequences: input ``[T, B, ...]``, output spikes of the same shape. Stepping
over T happens inside one module call, so the convolutions around it see all T*B samples at once.
Every call starts from rest unless ``carry`` is set (the reference's scoring carries membrane potentials
from one batch into the next). ``recording`` hands the spikes of chosen layers to a listener as they fire
(the search's score). No neuron is registered anywhere, so none outlives its network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from engine.nn import fused


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


def lif_sequence(
    x: torch.Tensor, v: torch.Tensor, tau: float, v_th: float, charged: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``lif_step``'s arithmetic over a sequence, in buffers allocated once. Returns ``(codes, v)``.

    ``codes`` are the spikes as booleans (a quarter of the memory; the score's Gram matrix reads them as
    int8). ``charged``, when given, receives the membrane before each reset (the backward needs it);
    otherwise one step's buffer is reused. ``v`` is updated in place.
    """
    codes = torch.empty_like(x, dtype=torch.bool)
    step = torch.empty_like(v)
    rest = v.new_zeros(())
    for t in range(x.shape[0]):
        h = step if charged is None else charged[t]
        torch.sub(x[t], v, out=step).div_(tau)
        torch.add(v, step, out=h)  # v + (x - v) / tau, rounded as the reference writes it
        torch.ge(h, v_th, out=codes[t])
        torch.where(codes[t], rest, h, out=v)
    return codes, v


class LIFSequence(torch.autograd.Function):
    """A whole sequence in one autograd node.

    Forward: ``lif_sequence``. Backward: the gradient of ``lif_step`` written out as the reverse
    recurrence, from the charged membrane saved per step::

        dh_t = grad_t * surrogate'(h_t - v_th) + dv_t * (1 - s_t)   (the reset is detached)
        dx_t = dh_t / tau,   dv_{t-1} = dh_t * (1 - 1/tau)

    One saved tensor instead of autograd's graph of T x 6 small ops. Returns ``(spikes, codes, v)``, ``v``
    being the neuron's own state, advanced in place. Large layers run both directions as fused kernels
    (``fused.py``; they return no codes, and save the input and the starting membrane instead of the charged
    membranes), with this eager code as their reference and fallback.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, v: torch.Tensor, tau: float, v_th: float, alpha: float):  # type: ignore[override]
        ctx.constants = (tau, v_th, alpha)
        training = ctx.needs_input_grad[0]
        ctx.mark_dirty(v)
        ctx.mark_non_differentiable(v)
        start = v.clone() if training else None  # ``v`` advances in place
        spikes = fused.lif_forward(x, v, tau, v_th)
        if spikes is not None:  # no codes: ``LIF`` derives them when asked; the backward recomputes membranes
            ctx.fused = True
            ctx.save_for_backward(x, start)
            return spikes, None, v
        ctx.fused = False
        charged = torch.empty_like(x) if training else None
        codes, v = lif_sequence(x, v, tau, v_th, charged)
        ctx.save_for_backward(charged, codes)
        ctx.mark_non_differentiable(codes)
        return codes.to(x.dtype), codes, v

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor, _grad_codes, _grad_v):  # type: ignore[override]
        tau, v_th, alpha = ctx.constants
        if ctx.fused:
            x, start = ctx.saved_tensors
            dx = fused.lif_backward(grad_spikes, x, start, tau, v_th, alpha)
            if dx is not None:
                return dx, None, None, None, None
            charged = torch.empty_like(x)  # the compiler failed since the forward: recompute eagerly
            codes, _ = lif_sequence(x, start.clone(), tau, v_th, charged)
        else:
            charged, codes = ctx.saved_tensors
        # The spike's own term for all steps at once: grad * (alpha/2) / (1 + (pi/2 * alpha * (h - v_th))^2).
        dh = charged.sub(v_th).mul_(math.pi / 2 * alpha).square_().add_(1)
        torch.div(grad_spikes, dh, out=dh).mul_(alpha / 2)
        carried = torch.empty_like(dh[0])
        for t in range(charged.shape[0] - 2, -1, -1):
            # dh_t += dh_{t+1} * (1 - 1/tau) where the neuron did not fire at t
            torch.mul(dh[t + 1], 1 - 1 / tau, out=carried).masked_fill_(codes[t], 0.0)
            dh[t].add_(carried)
        return dh.div_(tau), None, None, None, None


class CodesBuffer:
    """One boolean buffer, grown as needed, that spike codes are written into shaped and laid out like the
    spikes: stepping through time, no step allocates codes, and layers that each read their codes before
    the next layer fires can share one (a paper-profile search holds one instead of one per layer)."""

    def __init__(self) -> None:
        self.storage: torch.Tensor | None = None

    def like(self, out: torch.Tensor) -> torch.Tensor:
        n = out.numel()
        if self.storage is None or self.storage.numel() < n or self.storage.device != out.device:
            self.storage = torch.empty(n, dtype=torch.bool, device=out.device)
        return self.storage[:n].as_strided(out.shape, out.stride())  # spikes are dense: any layout fits in n


SpikeListener = Callable[["LIF", torch.Tensor, torch.Tensor], None]


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
        self._listener: tuple[SpikeListener, CodesBuffer] | None = None  # set by ``recording`` only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.v if self.carry and self.v is not None else torch.zeros_like(x[0])
        out, codes, v = LIFSequence.apply(x, v, self.tau, self.v_th, self.alpha)
        self.v = v if self.carry else None
        if self._listener is not None:
            listener, buffer = self._listener
            listener(self, codes if codes is not None else torch.ne(out.detach(), 0, out=buffer.like(out)), out)
        return out

    def extra_repr(self) -> str:
        return f"tau={self.tau:.4g}, v_th={self.v_th}, alpha={self.alpha}, fanout={self.fanout}"


@contextmanager
def recording(layers: Sequence[LIF], listener: SpikeListener, *, carry: bool = False) -> Iterator[None]:
    """Inside, each of ``layers`` calls ``listener(layer, codes, spikes)`` as it fires, and keeps its membrane
    from one call to the next when ``carry`` (the reference's scoring carries it from batch to batch).

    ``codes`` are the spikes as booleans (the score's kernel reads them as int8), valid during the call only:
    the layers share one buffer, so a paper-profile search holds one layer's codes instead of all of them.
    """
    buffer = CodesBuffer()
    for layer in layers:
        layer._listener, layer.carry = (listener, buffer), carry
    try:
        yield
    finally:
        for layer in layers:
            layer._listener = None
