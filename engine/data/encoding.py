"""Input encodings: how an image in [0, 1] becomes the network's input sequence.

``rate`` (SpiKernel's choice): each pixel spikes with probability equal to its intensity, independently
at every timestep; the stem sees T different binary frames. ``direct`` (SNASNet's): the normalised
analog image is fed once; the network repeats the stem's output over T.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from engine.core.errors import InputError
from engine.data.images import DatasetInfo, normalize


def rate(x: torch.Tensor, timesteps: int, info: DatasetInfo) -> torch.Tensor:
    return torch.bernoulli(x.clamp(0, 1).unsqueeze(0).expand(timesteps, *x.shape))


def direct(x: torch.Tensor, timesteps: int, info: DatasetInfo) -> torch.Tensor:
    return normalize(x, info).unsqueeze(0)


ENCODINGS: dict[str, Callable[[torch.Tensor, int, DatasetInfo], torch.Tensor]] = {"rate": rate, "direct": direct}


def encode(kind: str, x: torch.Tensor, timesteps: int, info: DatasetInfo) -> torch.Tensor:
    """``x``: images ``[B, 3, H, W]`` in [0, 1]. Returns ``[T, B, 3, H, W]`` (rate) or ``[1, B, ...]`` (direct)."""
    try:
        encoder = ENCODINGS[kind]
    except KeyError:
        raise InputError(f"unknown encoding {kind!r}; choose one of {', '.join(ENCODINGS)}") from None
    return encoder(x, timesteps, info)
