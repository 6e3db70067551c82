"""SpiKernel engine: kernel-size exploration for spiking neural networks.

The public names below import lazily, so ``import engine`` stays cheap for the dashboard and the
command line until torch is actually needed.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "KernelSet": "space",
    "Space": "space",
    "SPIKENAS": "space",
    "Setting": "space",
    "Genotype": "space",
    "TABLE_I": "space",
    "SpaceError": "space",
    "Profile": "profiles",
    "ScoreConfig": "profiles",
    "get_profile": "profiles",
    "PROFILES": "profiles",
    "load_dataset": "data",
    "DatasetError": "datasets",
    "build_network": "network",
    "footprint": "memory",
    "layer_counts": "memory",
    "sahd_score": "score",
    "random_search": "search",
    "Candidate": "search",
    "SearchResult": "search",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
