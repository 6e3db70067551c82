"""Writing files so that a kill at any instant leaves either the old file or the new one, never half."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write under a temporary name, flush it to disk, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, payload) -> None:
    write_atomic(path, json.dumps(payload, indent=1) + "\n")
