"""Seeds derived per purpose, and a seeded scope for torch's global RNG.

Every random stream (cell sampling, candidate ``i``'s weights and batch, epoch ``e``'s shuffling) gets
its own seed from a tuple of integers, so any one of them can be replayed alone: that is what lets an
interrupted search or training resume to the identical result.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


class SearchStream(IntEnum):
    """The random streams of a search, by their tag in the seed key. Fixed for good: stored scores depend on them."""

    CELLS = 0  # (seed, CELLS): the sampled cells
    SHARED_BATCHES = 1  # (seed, SHARED_BATCHES, draw): the batches every candidate sees when draws are shared
    SHARED_WEIGHTS = 2  # (seed, SHARED_WEIGHTS, draw): the initial weights, likewise
    WEIGHTS = 3  # (seed, WEIGHTS, index, draw): candidate ``index``'s own initial weights
    BATCHES = 4  # (seed, BATCHES, index, draw): candidate ``index``'s own batches


class TrainStream(IntEnum):
    """The random streams of a training, by their tag in the seed key. Fixed for good: resumed runs rely on them."""

    INIT = 0  # (seed, INIT): the initial weights
    SHUFFLE = 1  # (seed, SHUFFLE, epoch): the order and augmentation of the epoch's batches
    EPOCH = 2  # (seed, EPOCH, epoch): torch's global RNG during the epoch (rate-encoding spikes, dropout)
    EVALUATION = 3  # (seed, EVALUATION, epoch): the rate-encoding spikes of the epoch's test evaluation
    VALIDATION = 4  # (seed, VALIDATION): which training images are held out for validation


class StudyStream(IntEnum):
    """The random streams of a study's design. Fixed for good: a resumed study trains the cells it planned."""

    SAMPLE = 0  # (seed, SAMPLE) or (seed, SAMPLE, kernel set): the uniform sample of distinct cells


def derive_seed(seed: int, stream: SearchStream | TrainStream | StudyStream | int, *indices: int) -> int:
    """A 63-bit seed for one stream of ``seed`` (independent per key, stable across platforms)."""
    keys = [int(seed), int(stream), *map(int, indices)]
    state = np.random.SeedSequence(keys).generate_state(2, dtype=np.uint32)
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
