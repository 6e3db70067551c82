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


def cli(*args, env: dict | None = None, timeout: float = 600, **kw):
    """``python -m engine ARGS`` in a fresh process from the checkout; its completed process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=ROOT,
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
        **kw,
    )


APP = str(ROOT / "app.py")


def app(page: str | None = None):
    """The dashboard in Streamlit's AppTest, on ``page`` (app.py runs first: st.navigation then knows the pages)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60).run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at) -> str:
    """Everything written as Markdown, captions, alerts and bar labels, unescaped, in one string."""
    parts = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "success") for e in at.get(kind)]
    parts += [p.text for p in at.get("progress")]
    return "\n".join(parts).replace("\\", "")
