"""The LIF recurrence, and batch norm's backward, as fused loops compiled by Inductor.

Eager PyTorch runs each step of ``lif_step`` as separate passes over the whole layer (subtract, divide,
add, compare, reset: five per timestep forward, about ten passes backward), and at training sizes those
passes are memory-bound. Written as the same arithmetic over a flat ``[T, n]`` view and compiled with
``torch.compile`` (C++/OpenMP loops on CPUs, Triton kernels on GPUs), each direction reads its inputs
once and writes its outputs once; the backward recomputes the membranes from the layer's input, which
the forward then need not write out.

Kernels are compiled once per process (the first size exactly, later sizes by one graph with the size
symbolic) and reused by every later batch, epoch and candidate; Inductor's on-disk cache makes later
processes load them in a second or two. Batch norm's backward (per-timestep statistics, channels-last)
takes one pass for its two sums over every timestep at once and one for the input gradient, where ATen
runs a kernel per timestep into a temporary that is then copied out. The loops write float spikes only
(boolean outputs vectorise poorly there); the score takes its boolean codes from them in one comparison.
The eager code in ``neuron.py`` stays the reference and the fallback: ``SPIKERNEL_KERNELS=eager``
selects it everywhere, layers under ``MIN_ELEMENTS`` values use it (compiling would cost more than it
saves), and so does every call after a compiler failure (a warning says why, once).
"""

from __future__ import annotations

import math
import os
import time
import warnings

import torch

MODE = os.environ.get("SPIKERNEL_KERNELS", "auto")  # auto, fused (any size) or eager
MIN_ELEMENTS = 1 << 20
RECOMPILE_LIMIT = 64

compile_seconds = 0.0  # spent on first calls (compiling or loading from the cache), for the benchmarks
_failure: str | None = None
_compiled: dict = {}
_seen: set = set()


def _charge(x: torch.Tensor, state: torch.Tensor, tau: float):
    return state + (x - state) / tau


def _forward(x: torch.Tensor, v: torch.Tensor, tau: float, v_th: float):
    """``lif_step`` over ``x [T, n]`` from ``v [n]``, which ends as the final membrane (written in place, as
    ``lif_sequence`` does: a neuron stepped through time keeps one buffer instead of a new one per step).
    Returns the spikes."""
    spikes = []
    state = v
    for t in range(x.shape[0]):
        h = _charge(x[t], state, tau)
        fired = h >= v_th
        spikes.append(fired.to(x.dtype).unsqueeze(0))
        state = torch.where(fired, 0.0, h)
    v.copy_(state)
    return torch.cat(spikes)


def _backward(grad: torch.Tensor, x: torch.Tensor, v: torch.Tensor, tau: float, v_th: float, alpha: float):
    """``LIFSequence``'s reverse recurrence (see there) over ``[T, n]`` from the input and the initial membrane
    ``v``: the charged membranes are recomputed as the forward computed them (the same rounding, so the same
    spikes) instead of being written out and read back."""
    charged, state = [], v
    for t in range(x.shape[0]):
        h = _charge(x[t], state, tau)
        charged.append(h)
        state = torch.where(h >= v_th, 0.0, h)
    own = [g * ((alpha / 2) / (1 + (math.pi / 2 * alpha * (h - v_th)) ** 2)) for g, h in zip(grad, charged)]
    dh = own[-1]
    # Each step's dx = dh / tau is taken before the steps are joined: scaling the joined tensor would make
    # Inductor write it out and pass over it once more.
    out = [(dh / tau).unsqueeze(0)]
    for t in range(x.shape[0] - 2, -1, -1):
        dh = own[t] + torch.where(charged[t] >= v_th, 0.0, dh * (1 - 1 / tau))
        out.append((dh / tau).unsqueeze(0))
    return torch.cat(out[::-1])


def _batch_norm_backward(grad, x, mean, invstd, weight):
    """Train-mode batch norm's ``(dx, dweight, dbias)`` over channels-last ``[T, B, C, H, W]`` with ``[T, C]``
    statistics per timestep and channel, the weight and bias gradients summed over timesteps (one batch norm
    per timestep, one set of weights): one pass for the two sums, one for the input gradient.

    Written over the ``[T*B*H*W, C]`` rows of memory, each row finding its timestep's statistics, so the
    input gradient's loop splits over all rows, not over the T timesteps (5 of them share 2 threads badly).
    """
    steps, batch, channels, height, width = x.shape
    n = batch * height * width

    def rows(t):  # a view: channels-last memory is these rows
        return t.permute(0, 1, 3, 4, 2).reshape(steps * n, channels)

    def per_row(stat):  # [T, C] -> each row's timestep's values
        return stat[:, None, :].expand(steps, n, channels).reshape(steps * n, channels)

    x_rows, grad_rows = rows(x), rows(grad)
    xhat = (x_rows - per_row(mean)) * per_row(invstd)
    sum_grad = grad_rows.view(steps, n, channels).sum(1)
    sum_grad_xhat = (grad_rows * xhat).view(steps, n, channels).sum(1)
    dx = (grad_rows - per_row(sum_grad / n) - xhat * per_row(sum_grad_xhat / n)) * per_row(invstd * weight)
    return dx.view(steps, batch, height, width, channels).permute(0, 1, 4, 2, 3), sum_grad_xhat.sum(0), sum_grad.sum(0)


def flat(x: torch.Tensor, leading: int) -> torch.Tensor | None:
    """``x`` as ``[*x.shape[:leading], n]`` in memory order (a view), or None when its layout has gaps.

    Contiguous and channels-last layers alike: the recurrence is element-wise, so any order of the neurons
    in memory will do as long as each timestep is one dense block.
    """
    inner = x[(0,) * leading] if leading else x
    n = inner.numel()
    dense = inner.is_contiguous() or (inner.dim() == 4 and inner.is_contiguous(memory_format=torch.channels_last))
    if not dense or (leading and x.stride(leading - 1) != n):
        return None
    return x.as_strided((*x.shape[:leading], n), (n, 1)[-leading - 1 :], x.storage_offset())


def unflat(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A flat result viewed with ``like``'s shape and layout."""
    return y.as_strided(like.shape, like.stride())


def in_layout_of(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``grad`` with ``like``'s strides (a copy only when they differ): the kernels take both in one layout."""
    return grad if grad.stride() == like.stride() else torch.empty_like(like).copy_(grad)


def wanted(x: torch.Tensor) -> bool:
    if MODE == "eager" or _failure is not None:
        return False
    return MODE == "fused" or x.numel() >= MIN_ELEMENTS


def _run(fn, *args):
    """``fn`` compiled (once per process), or None when compiling failed (the caller runs eager code)."""
    global _failure, compile_seconds
    if fn not in _compiled:
        # The first size is compiled for exactly that size; a second one recompiles with the size symbolic,
        # which then serves every other (Dynamo's automatic dynamic shapes). Separate graphs remain per
        # dtype, T and flags, more than Dynamo's default limit of 8 in a long-lived worker.
        _compiled[fn] = torch.compile(fn, fullgraph=True)
    key = (fn, *((a.shape, a.dtype, a.device) if torch.is_tensor(a) else a for a in args))
    started = time.perf_counter()
    try:
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
            out = _compiled[fn](*args)
    except Exception as error:  # no C++ compiler, no Triton, an unsupported device: stay correct, go eager
        _failure = f"{type(error).__name__}: {error}".splitlines()[0]
        warnings.warn(f"fused kernels unavailable, using eager ones ({_failure})", RuntimeWarning, stacklevel=3)
        return None
    if key not in _seen:
        _seen.add(key)
        compile_seconds += time.perf_counter() - started
    return out


def lif_forward(x: torch.Tensor, v: torch.Tensor, tau: float, v_th: float):
    """Spikes shaped and laid out like ``x``, with ``v`` advanced in place; or None to run eager code (``v``
    untouched)."""
    fx, fv = flat(x, 1), flat(v, 0)
    if not wanted(x) or fx is None or fv is None:
        return None
    spikes = _run(_forward, fx, fv, tau, v_th)
    return None if spikes is None else unflat(spikes, x)


def lif_backward(grad: torch.Tensor, x: torch.Tensor, v: torch.Tensor, tau: float, v_th: float, alpha: float):
    """The input gradient laid out like ``x``, from the membrane ``v`` the sequence started at; or None to run
    eager code."""
    if not wanted(x):
        return None
    fg, fx, fv = flat(in_layout_of(grad, x), 1), flat(x, 1), flat(v, 0)
    if fg is None or fx is None or fv is None:
        return None
    dx = _run(_backward, fg, fx, fv, tau, v_th, alpha)
    return None if dx is None else unflat(dx, x)


def _fusable(x: torch.Tensor, weight: torch.Tensor | None) -> bool:
    """Batch norm's fused kernels take channels-last ``[T, B, C, H, W]`` (the network's layout) with weights."""
    return weight is not None and wanted(x) and x[0].is_contiguous(memory_format=torch.channels_last)


def batch_norm_backward(grad, x, weight, mean, invstd):
    """``PerTimestepBatchNorm``'s ``(dx, dweight, dbias)``, or None to run eager code."""
    if not _fusable(x, weight):
        return None
    return _run(_batch_norm_backward, in_layout_of(grad, x), x, mean, invstd, weight)
