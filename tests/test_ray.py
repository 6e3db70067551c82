"""The Ray backend on a local two-CPU cluster: jobs run as Ray tasks, the driver alone writes the store."""

from __future__ import annotations

import shutil
import sys
import threading
import time

import pytest

from engine import api
from engine.jobs.execute import sha256_file
from engine.jobs.worker import WorkerBusy
from engine.store import Store
from engine.train.checkpoint import load_model

pytestmark = pytest.mark.slow  # a local Ray cluster


@pytest.fixture(scope="module")
def cluster(sample, tmp_path_factory):
    """A private Ray cluster of this machine whose tasks see the data root; ``serve_ray`` reuses it."""
    import ray  # not skipped when missing: requirements-dev.txt installs it
    from helpers import write_subset

    from engine.jobs.ray_driver import connect

    root = tmp_path_factory.mktemp("ray-data")
    dataset = write_subset(sample, root / "tiny", classes=2, train_per_class=48, test_per_class=16)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPIKERNEL_DATA", str(root))
        mp.setenv("OMP_NUM_THREADS", "1")
        connect(ray, "local", num_cpus=2)
        try:
            yield {"root": root, "dataset": dataset}
        finally:
            ray.shutdown()


def submit(store: Store, dataset: str, **kw) -> dict:
    config = api.ExperimentConfig(
        dataset=dataset, kernel_sets=("1x1_3x3",), epochs=1, device="cpu", **{"baseline": None, **kw}
    )
    return api.submit_experiment(config, store=store)


def test_ray_runs_an_experiment_end_to_end(cluster, tmp_path):
    from engine.jobs.ray_driver import MARKER, serve_ray

    store = Store(tmp_path / "spikernel.db")
    ids = submit(store, cluster["dataset"], iterations=3)
    serve_ray(store, idle_exit=0.5)

    (run,) = store.runs([ids["experiment_id"]])
    assert (run["status"], run["stage"], run["error"]) == ("done", "done", None)
    assert [c["index"] for c in store.candidates(run["id"])] == [0, 1, 2]
    assert [e["epoch"] for e in store.epochs([run["id"]])] == [1]
    assert run["best_genotype"] and run["accuracy"] is not None
    path = store.root / run["checkpoint"]
    assert sha256_file(path) == run["checkpoint_sha256"] and path.stat().st_size == run["checkpoint_bytes"]
    loaded = load_model(path)
    assert str(loaded.genotype) == run["best_genotype"]
    assert not (path.parent / MARKER).exists()
    job = store.job(ids["job_ids"][0])
    assert job["device"] == "ray:cpu" and job["attempts"] == 1
    assert "Ray task" in api.job_log(job["id"], store=store)


def test_ray_cancel_reaches_the_task_and_failures_read_type_and_message(cluster, tmp_path):
    from engine.jobs.ray_driver import serve_ray

    store = Store(tmp_path / "spikernel.db")
    long = submit(store, cluster["dataset"], iterations=100_000)
    gone = cluster["root"] / "gone"
    shutil.copytree(cluster["root"] / "tiny", gone)
    broken = submit(store, "folder:gone", iterations=3)
    shutil.rmtree(gone)  # submitted, then deleted: the task cannot load it

    stop = threading.Event()
    driver = threading.Thread(target=serve_ray, args=(store,), kwargs={"stop": stop}, daemon=True)
    driver.start()
    try:
        watch = Store(store.path)  # this thread's own connection
        deadline = time.monotonic() + 40
        while watch.run(long["run_ids"][0])["candidates_done"] == 0:  # the search is running as a task
            assert time.monotonic() < deadline, "the long job never reported a candidate"
            time.sleep(0.2)
        with pytest.raises(WorkerBusy):  # the driver holds the local worker's lock
            serve_ray(watch)
        assert api.cancel(long["experiment_id"], store=watch) == 1
        while (
            watch.job(long["job_ids"][0])["status"] == "running"
            or watch.job(broken["job_ids"][0])["status"] != "failed"
        ):
            assert time.monotonic() < deadline, "the cancel or the failure never came through"
            time.sleep(0.2)
    finally:
        stop.set()
        driver.join(30)
    assert not driver.is_alive()
    cancelled = watch.job(long["job_ids"][0])
    assert cancelled["status"] == "cancelled"
    assert 0 < watch.run(long["run_ids"][0])["candidates_done"] < 100_000
    failed = watch.job(broken["job_ids"][0])
    assert failed["error"].startswith("DatasetError: ") and "\n" not in failed["error"], failed["error"]


def test_missing_ray_is_one_line_from_the_cli(tmp_path, monkeypatch, capsys):
    from engine.__main__ import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    assert main(["--db", str(tmp_path / "spikernel.db"), "worker", "--ray"]) == 2
    assert capsys.readouterr().err == "error: Ray is not installed: pip install -r requirements-ray.txt\n"
