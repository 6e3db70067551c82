from __future__ import annotations

import pytest
import torch

from engine.data import dataset_shape

torch.set_num_threads(2)

CIFAR10, CIFAR100, TINY = (dataset_shape(name) for name in ("cifar10", "cifar100", "tinyimagenet"))


@pytest.fixture(scope="session")
def sample():
    from engine.data import load_dataset

    data = load_dataset("sample")
    data.train.tensors()
    return data
