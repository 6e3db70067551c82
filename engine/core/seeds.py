"""Seeds derived per purpose, and a seeded scope for torch's global RNG.

Every random stream (cell sampling, candidate ``i``'s weights and batch, epoch ``e``'s shuffling) gets
its own seed from a tuple of integers, so any one of them can be replayed alone: that is what lets an
interrupted search or training resume to the identical result.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from a tuple of integers (independent streams per key, stable across platforms)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return int(state.view(np.uint64)[0] >> 1)


@contextmanager
def seeded(device: torch.device, seed: int) -> Iterator[None]:
    """Run with torch's global RNG (CPU, and ``device``'s when it is a GPU) seeded, restored afterwards.

    Weight init, rate-encoding spikes and dropout masks draw from the global RNG; forking keeps them
    reproducible without disturbing the caller's stream.
    """
    import torch  # here, so that ``derive_seed`` serves torch-free modules (the study replays searches)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield
