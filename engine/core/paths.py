"""Where things live: the project's folder, the data root and its environment variables."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DATA_ROOT_ENV = "SPIKERNEL_DATA"
DATA_ROOTS_ENV = "SPIKERNEL_DATA_ROOTS"
BUNDLED_BENCHMARKS = PROJECT_ROOT / "data" / "benchmarks"


def default_data_root() -> Path:
    """Where downloadable datasets live: ``$SPIKERNEL_DATA`` if set, else ``<project root>/data``."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else PROJECT_ROOT / "data"
