from __future__ import annotations

import os
import time

import pytest
import torch
from hypothesis import settings

torch.set_num_threads(2)
# Property tests draw new examples on every run, from a seed the run derives and prints at its end:
# `pytest --hypothesis-seed=N` (or SPIKERNEL_TEST_SEED=N) replays a run. A failure also prints the blob that
# replays its example with @reproduce_failure, and is kept in .hypothesis/, which is tried first next time.
settings.register_profile("replayable", print_blob=True)
settings.load_profile("replayable")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    if config.getoption("hypothesis_seed", None) is None:
        config.option.hypothesis_seed = int(os.environ.get("SPIKERNEL_TEST_SEED") or time.time_ns() % 1_000_000)


def pytest_terminal_summary(terminalreporter, config):  # printed under -q too, where CI reads it
    seed = config.getoption("hypothesis_seed", None)
    terminalreporter.write_line(f"property tests drew from seed {seed}: SPIKERNEL_TEST_SEED={seed} replays them")


@pytest.fixture(scope="session")
def sample():
    from engine.data.images import load_dataset

    data = load_dataset("sample")
    data.train.tensors()
    return data


@pytest.fixture(scope="session")
def studio(sample, tmp_path_factory):
    """A data root with two small real datasets (``folder:tiny``: 2 classes, 150 training images each, enough
    to learn something; ``folder:mini``: 16 each, for mechanics) and an empty experiment database;
    ``SPIKERNEL_DATA`` and ``SPIKERNEL_DB`` point at them for the whole session (the dashboard's tests
    run the app in this process)."""
    from helpers import write_subset

    root = tmp_path_factory.mktemp("studio")
    write_subset(sample, root / "tiny", classes=2, train_per_class=150, test_per_class=50)
    write_subset(sample, root / "mini", classes=2, train_per_class=16, test_per_class=8)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPIKERNEL_DATA", str(root))
        mp.setenv("SPIKERNEL_DB", str(root / "spikernel.db"))
        yield {"root": root, "db": root / "spikernel.db", "dataset": "folder:tiny", "mini": "folder:mini"}


@pytest.fixture(scope="session")
def finished(studio):
    """A real experiment run to the end by a real worker: two kernel sets (3 iterations) and a
    1x1_3x3_6x baseline on ``folder:tiny``, 3 epochs. Returns the submit ids."""
    import threading

    from engine import api
    from engine.jobs.worker import serve

    config = api.ExperimentConfig(
        dataset=studio["dataset"],
        kernel_sets=("1x1_3x3", "3x3_5x5"),
        iterations=3,
        epochs=3,
        baseline="1x1_3x3_6x",
        device="cpu",
        budget="10M",
        name="finished fixture",
    )
    store = api.get_store()
    ids = api.submit_experiment(config, store=store)
    serve(store, devices=["cpu"], idle_exit=0.2, stop=threading.Event())
    assert set(api.runs_frame([ids["experiment_id"]], store=store)["status"]) == {"done"}
    return ids


@pytest.fixture
def own_db(studio, tmp_path, monkeypatch):
    """An empty database of this test's own (the data root stays the studio's), and no detached worker:
    ``ensure_worker`` records its calls instead."""
    from engine import api

    monkeypatch.setenv("SPIKERNEL_DB", str(tmp_path / "own.db"))
    started = []
    monkeypatch.setattr(api, "ensure_worker", lambda **kw: started.append(kw) or 4242)
    return {"store": api.get_store(), "worker_starts": started}


@pytest.fixture
def no_worker(monkeypatch):
    """The sidebar starts a worker when jobs wait; a test using this starts none."""
    from engine import api

    monkeypatch.setattr(api, "ensure_worker", lambda **kw: None)


@pytest.fixture
def downloads(monkeypatch):
    """What each download button would hand the browser: ``files`` by file name (deferred data is called), and
    the names that were ``deferred`` (built only when clicked)."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    files: dict[str, bytes | str] = {}
    deferred: list[str] = []
    add, add_deferred = MediaFileManager.add, MediaFileManager.add_deferred

    def record(self, data, mimetype, coordinates, file_name=None, **kw):
        files[file_name] = data
        return add(self, data, mimetype, coordinates, file_name, **kw)

    def record_deferred(self, data_callable, mimetype, coordinates, file_name=None, **kw):
        deferred.append(file_name)
        files[file_name] = data_callable()
        return add_deferred(self, data_callable, mimetype, coordinates, file_name, **kw)

    monkeypatch.setattr(MediaFileManager, "add", record)
    monkeypatch.setattr(MediaFileManager, "add_deferred", record_deferred)
    return {"files": files, "deferred": deferred}
