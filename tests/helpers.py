"""Helpers shared by the tests: small real datasets cut from the bundled sample, the command line and its
one-line errors, the dashboard in AppTest, and the worker as a real process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.data import dataset_shape

ROOT = Path(__file__).resolve().parent.parent
CIFAR10, CIFAR100, TINY = (dataset_shape(name) for name in ("cifar10", "cifar100", "tinyimagenet"))


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


def environment(**extra: str) -> dict:
    """The environment of a process the tests start: this one's, with the checkout importable."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def cli(*args, env: dict | None = None, timeout: float = 600, **kw):
    """``python -m engine ARGS`` in a fresh process from the checkout; its completed process."""
    env = environment(**(env or {}))
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


def app(page: str | None = None, **session):
    """The dashboard in Streamlit's AppTest, on ``page`` (app.py runs first: st.navigation then knows the pages),
    with ``session`` in its session state."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in session.items():
        at.session_state[key] = value
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at) -> str:
    """Everything written as Markdown, captions, alerts and bar labels, unescaped, in one string."""
    parts = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "success") for e in at.get(kind)]
    parts += [p.text for p in at.get("progress")]
    return "\n".join(parts).replace("\\", "")


SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")  # a download's file name: nothing a browser or a shell could misread


def one_line_error(run, message: str) -> None:
    """The command line's refusal of bad input: exit 2, one line starting with ``error:``, no traceback."""
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert "Traceback" not in run.stderr and run.stderr.count("\n") == 1 and run.stderr.startswith("error: ")
    assert re.search(message, run.stderr), run.stderr


# ------------------------------------------------------------------------------ the worker as a process

WAIT_S = 240


def start_worker(db, *extra: str) -> subprocess.Popen:
    env = environment(OMP_WAIT_POLICY="PASSIVE")
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "--db", str(db), "worker", "--idle-exit", "0.5", *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, what: str, process: subprocess.Popen | None = None, timeout: float = WAIT_S):
    import pytest

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the worker exited ({process.returncode}) before {what}: {process.stderr.read()}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def kill9(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


def finish(db) -> None:
    """A fresh worker runs the queue to its end."""
    process = start_worker(db)
    assert process.wait(timeout=WAIT_S) == 0, process.stderr.read()


# ------------------------------------------------------------------------------ a model file to deploy

# Every op: 3x3 and 5x5 convs, the 3x3 average pool, a skip (all six edges carry one).
EVERY_OP = ("0234 0042 0001 0000", "3x3_5x5")


def make_model(path, info, genotype: str, kernel_set: str, *, seed: int = 0, profile: str = "laptop"):
    """A network with BatchNorm statistics away from the identity (so folding them is tested) and enough
    gain that every LIF layer fires, saved and loaded as a trained model."""
    import torch
    from torch import nn

    from engine.core.profiles import get_profile
    from engine.core.space import Genotype, Space
    from engine.nn.network import build_network
    from engine.train.checkpoint import load_model, save_trained

    ks, chosen = Space.parse(kernel_set), get_profile(profile)
    g = ks.check(Genotype.from_str(genotype))
    torch.manual_seed(seed)
    net = build_network(g, ks, chosen, info)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(1.0, 3.0)
                m.bias.uniform_(0.0, 0.5)
    save_trained(path, net, genotype=g, kernel_set=ks, profile=chosen, info=info, accuracy=0.5, seed=seed, epochs=1)
    return load_model(path)


# ------------------------------------------------------------------------------ Ctrl-C, as a terminal sends it


def start_in_terminal(*args: str) -> subprocess.Popen:
    """``python -m engine ARGS`` as a terminal runs it: a process group of its own (with any process it starts), so
    that ``ctrl_c`` reaches all of them as Ctrl-C does. Its output is captured as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "engine", *args],
        cwd=ROOT,
        env=environment(OMP_WAIT_POLICY="PASSIVE"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        process_group=0,
    )


def ctrl_c(process: subprocess.Popen) -> None:
    """SIGINT to the process and every process of its group, as Ctrl-C in its terminal."""
    os.killpg(process.pid, signal.SIGINT)


def group_alive(process: subprocess.Popen) -> bool:
    """Whether any process of ``process``'s group (its children included) is still there."""
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


def end_group(process: subprocess.Popen) -> None:
    """Cleanup after a test, whatever it left: SIGKILL to whatever of the group still runs."""
    if group_alive(process):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def temporary_files(folder: Path) -> list[str]:
    """Files a writer leaves half-way under ``folder``: a hidden ``.NAME.PID.tmp`` (atomic writes), ``*.new`` (a
    database being made), a SQLite rollback journal."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.name.startswith(".") or p.name.endswith((".tmp", ".new", "-journal"))
    )


# ------------------------------------------------------------------------------ a crafted model file


def resign(src, dst, meta=None, tensors=None):
    """A copy of model file ``src`` at ``dst``, its metadata passed through ``meta`` and its tensors through
    ``tensors`` (functions of the decoded JSON and of the dict of tensors), with the checksum recomputed to match:
    a crafted file, as anyone can write one (the checksum is an integrity check, not a signature)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from engine.train.checkpoint import _content_digest, _weights_digest

    with safe_open(str(src), framework="pt") as f:
        header, held = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    text = json.dumps((meta or (lambda m: m))(json.loads(header["spikernel"])))
    held = (tensors or (lambda t: t))(held)
    save_file(held, str(dst), metadata={"spikernel": text, "sha256": _content_digest(text, _weights_digest(held))})
    return dst
