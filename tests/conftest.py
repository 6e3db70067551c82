from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

torch.set_num_threads(2)


@dataclass(frozen=True)
class Shape:
    """A dataset's shape without its images (what the network and memory counts need)."""

    macro: str
    image_size: int
    num_classes: int


CIFAR10 = Shape("cifar10", 32, 10)
CIFAR100 = Shape("cifar100", 32, 100)
TINY = Shape("tinyimagenet", 64, 200)


@pytest.fixture(scope="session")
def sample():
    from engine.data import load_dataset

    data = load_dataset("sample")
    data.train.tensors()
    return data
