"""SNASNet's training-free score (SAHD): how differently a network's neurons fire for different images.

For one hook call with binary codes ``x`` (B samples x N neurons), with firing rates ``s_i = |x_i| / N``
and Hamming distances ``d_ij``::

    K_ij = N - 0.5 * d_ij / (N * (s_i (1 - s_j) + (1 - s_i) s_j) + 1e-3)

K is summed over every LIF layer and timestep, divided by the number of those hook calls, and the score
is ``log |det K|``. Hamming distances come from one matmul, ``d = r_i + r_j - 2 x x^T`` with ``r`` the row
sums: exact, as binary codes and their integer dot products are exact in int8 x int8 -> int32 (and in
float32 while N < 2^24).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def gram(codes: torch.Tensor) -> torch.Tensor:
    """``x x^T`` per call: ``[..., B, B]`` integer counts of shared spikes, in float64, from ``[..., B, N]``.

    Binary codes go through an int8 matmul with int32 accumulation (exact, and several times faster
    than float32 on CPUs with VNNI and on GPUs' tensor cores); other inputs through a float32 matmul, exact
    while N < 2^24.
    """
    if codes.dtype == torch.bool:
        x = codes.view(torch.int8)
        try:
            return (
                torch.stack([torch._int_mm(c, c.T) for c in x.reshape(-1, *x.shape[-2:])])
                .reshape(*x.shape[:-1], x.shape[-2])
                .double()
            )
        except RuntimeError:  # shapes the int8 kernel does not take (CUDA wants multiples of 8)
            codes = x
    x = codes.float()
    return torch.matmul(x, x.transpose(-1, -2)).double()


def hamming_kernel(codes: torch.Tensor) -> torch.Tensor:
    """Per-call kernels ``[..., B, B]`` (float64) from binary codes ``[..., B, N]`` (bool or numbers)."""
    return kernel_from_gram(gram(codes), codes.shape[-1])


def kernel_from_gram(g: torch.Tensor, n: int) -> torch.Tensor:
    r = g.diagonal(dim1=-2, dim2=-1)  # x_i . x_i is the spike count of a binary row
    hamming = r.unsqueeze(-1) + r.unsqueeze(-2) - 2 * g
    s = r / n
    s_i, s_j = s.unsqueeze(-1), s.unsqueeze(-2)
    return n - 0.5 * hamming / (n * (s_i * (1 - s_j) + (1 - s_i) * s_j) + 1e-3)


def log_abs_det(kernel: torch.Tensor) -> float:
    return float(torch.linalg.slogdet(kernel)[1])


def sahd_score(codes: Sequence[torch.Tensor]) -> float:
    """The score from a list of code tensors, one per hook call, each ``(batch, neurons)``."""
    if not codes:
        raise ValueError("sahd_score needs at least one code tensor")
    acc = KernelAccumulator()
    for c in codes:
        acc.add(c.unsqueeze(0))
    return acc.score()


class KernelAccumulator:
    """Sums per-call kernels as spikes arrive, so codes are never stored.

    Args:
        count_silent: include hook calls in which no neuron fired (the reference does). Such a call adds
            the constant ``N`` everywhere, which at reduced width mostly rewards cells with more conv edges.
    """

    def __init__(self, count_silent: bool = True) -> None:
        self.count_silent = count_silent
        self.total: torch.Tensor | None = None
        self.calls = 0

    def add(self, spikes: torch.Tensor, weight: int = 1) -> torch.Tensor:
        """Add ``spikes`` ``[T, B, ...]`` (bool codes or 0/1 numbers): T hook calls, each counted ``weight`` times.

        Returns the spike count of each call ``[T]``.
        """
        if spikes.dim() == 5 and not spikes.is_contiguous():
            # The kernel ignores neuron order: flatten channels-last maps in memory order, without a copy.
            spikes = spikes.movedim(2, -1)
        codes = spikes.reshape(*spikes.shape[:2], -1)
        g = gram(codes)
        kernels = kernel_from_gram(g, codes.shape[-1])
        counts = g.diagonal(dim1=-2, dim2=-1).sum(-1)
        if not self.count_silent:
            kernels = kernels[counts > 0]
        if kernels.shape[0]:
            k = kernels.sum(0) * weight
            self.total = k if self.total is None else self.total + k
            self.calls += weight * kernels.shape[0]
        return counts

    def score(self) -> float:
        """``log |det K|`` of the averaged kernel; ``-inf`` when nothing was counted."""
        if self.total is None:
            return float("-inf")
        return log_abs_det(self.total / self.calls)
