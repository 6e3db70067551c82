"""Helpers shared by the tests: small real datasets cut from the bundled sample, the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_subset(sample, folder: Path, classes: int, train_per_class: int, test_per_class: int) -> str:
    """A ``folder:`` dataset of real sample images (PNG, lossless), for runs that must stay small."""
    from PIL import Image

    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        images, labels = getattr(sample, split).tensors()
        for c in range(classes):
            out = folder / split / sample.info.classes[c]
            out.mkdir(parents=True)
            for i, idx in enumerate((labels == c).nonzero().flatten()[:per_class].tolist()):
                Image.fromarray(images[idx].permute(1, 2, 0).numpy()).save(out / f"{i:04d}.png")
    return f"folder:{folder}"


def cli(*args, env: dict | None = None, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, text=True, capture_output=True, **kw)
