"""The LIF recurrence as fused loops, compiled by Inductor: one pass forward, one backward.

Eager PyTorch runs each step of ``lif_step`` as separate passes over the whole layer (subtract, divide,
add, compare, reset: five per timestep forward, about ten passes backward), and at training sizes those
passes are memory-bound. Written as the same arithmetic over a flat ``[T, n]`` view and compiled with
``torch.compile`` (C++/OpenMP loops on CPUs, Triton kernels on GPUs), each direction reads its inputs
once and writes its outputs once; the backward recomputes which neurons fired from the saved membrane
instead of storing them.

Kernels are compiled once per process (the first size exactly, later sizes by one graph with the size
symbolic) and reused by every later batch, epoch and candidate; Inductor's on-disk cache makes later
processes load them in a second or two. The loops write float spikes only
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


def _forward(x: torch.Tensor, v: torch.Tensor, tau: float, v_th: float, keep_charged: bool):
    """``lif_step`` over ``x [T, n]`` from ``v [n]``, which ends as the final membrane (written in place, as
    ``lif_sequence`` does: a neuron stepped through time keeps one buffer instead of a new one per step).
    Returns ``(spikes, charged membranes or None)``."""
    spikes, charged = [], []
    state = v
    for t in range(x.shape[0]):
        h = state + (x[t] - state) / tau
        fired = h >= v_th
        spikes.append(fired.to(x.dtype).unsqueeze(0))
        charged.append(h.unsqueeze(0))
        state = torch.where(fired, 0.0, h)
    v.copy_(state)
    return torch.cat(spikes), torch.cat(charged) if keep_charged else None


def _backward(grad: torch.Tensor, charged: torch.Tensor, tau: float, v_th: float, alpha: float):
    """``LIFSequence``'s reverse recurrence (see there) over ``[T, n]``."""
    own = grad * ((alpha / 2) / (1 + (math.pi / 2 * alpha * (charged - v_th)) ** 2))
    dh = own[-1]
    out = [dh.unsqueeze(0)]
    for t in range(charged.shape[0] - 2, -1, -1):
        dh = own[t] + torch.where(charged[t] >= v_th, 0.0, dh * (1 - 1 / tau))
        out.append(dh.unsqueeze(0))
    return torch.cat(out[::-1]) / tau


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
        warnings.warn(f"fused LIF kernels unavailable, using eager ones ({_failure})", RuntimeWarning, stacklevel=3)
        return None
    if key not in _seen:
        _seen.add(key)
        compile_seconds += time.perf_counter() - started
    return out


def lif_forward(x: torch.Tensor, v: torch.Tensor, tau: float, v_th: float, keep_charged: bool):
    """``(spikes, charged or None)`` shaped and laid out like ``x``, with ``v`` advanced in place; or None to
    run eager code (``v`` untouched)."""
    fx, fv = flat(x, 1), flat(v, 0)
    if not wanted(x) or fx is None or fv is None:
        return None
    out = _run(_forward, fx, fv, tau, v_th, keep_charged)
    if out is None:
        return None
    spikes, charged = out
    return unflat(spikes, x), None if charged is None else unflat(charged, x)


def lif_backward(grad: torch.Tensor, charged: torch.Tensor, tau: float, v_th: float, alpha: float):
    """The input gradient laid out like ``charged``, or None to run eager code."""
    if not wanted(charged):
        return None
    if grad.stride() != charged.stride():
        grad = torch.empty_like(charged).copy_(grad)
    fg, fh = flat(grad, 1), flat(charged, 1)
    if fg is None or fh is None:
        return None
    dx = _run(_backward, fg, fh, tau, v_th, alpha)
    return None if dx is None else unflat(dx, charged)
