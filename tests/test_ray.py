"""The Ray backend on a local two-CPU cluster: jobs run as Ray tasks, the driver alone writes the store."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading

import pytest
from helpers import ROOT, one_line_error, wait_for

from engine import api
from engine.jobs.execute import sha256_file
from engine.jobs.worker import WorkerBusy
from engine.store import Store
from engine.train.checkpoint import load_model

pytestmark = pytest.mark.slow  # Ray clusters


@pytest.fixture(scope="module")
def data(sample, tmp_path_factory):
    """A data root with one small real dataset (2 classes, 48 training images each)."""
    from helpers import write_subset

    root = tmp_path_factory.mktemp("ray-data")
    return {
        "root": root,
        "dataset": write_subset(sample, root / "tiny", classes=2, train_per_class=48, test_per_class=16),
    }


@pytest.fixture(scope="module")
def cluster(data):
    """A private Ray cluster of this machine whose tasks see the data root; ``serve_ray`` reuses it."""
    import ray  # not skipped when missing: requirements-dev.txt installs it

    from engine.jobs.ray_driver import connect

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPIKERNEL_DATA", str(data["root"]))
        mp.setenv("OMP_NUM_THREADS", "1")
        connect(ray, "local", num_cpus=2)
        try:
            yield data
        finally:
            ray.shutdown()


def submit(store: Store, dataset: str, **kw) -> dict:
    config = api.ExperimentConfig(
        dataset=dataset, kernel_sets=("1x1_3x3",), device="cpu", **{"baseline": None, "epochs": 1, **kw}
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
        # Each step its own generous wait: Ray on two busy cores starts tasks slowly.
        wait_for(lambda: watch.run(long["run_ids"][0])["candidates_done"] > 0, "the long job's first candidate")
        with pytest.raises(WorkerBusy):  # the driver holds the local worker's lock
            serve_ray(watch)
        assert api.cancel(long["experiment_id"], store=watch) == 1
        wait_for(lambda: watch.job(long["job_ids"][0])["status"] != "running", "the cancel")
        wait_for(lambda: watch.job(broken["job_ids"][0])["status"] == "failed", "the broken job's failure")
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


# ------------------------------------------------------------------------- a cluster of several nodes

EPOCHS = 3  # the long job's training: its node is lost after the first epoch, the others take seconds more


def engine(cluster, *args, **env) -> subprocess.CompletedProcess:
    """``python -m engine ARGS`` with the cluster's environment: no Ray variable, the token in ``~/.ray``."""
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=ROOT,
        env={**cluster.env, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def rows(db, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


def test_the_readme_recipe_serves_jobs_on_other_nodes_through_node_loss_and_a_node_joining(data, tmp_path, monkeypatch):
    """The README's recipe with Ray's defaults (token authentication on) on this machine: a head with no
    CPU, so every task runs on another node, every node and the driver on 127.0.0.1.

    * ``worker --ray ADDRESS`` finds the token where ``ray start`` did (``~/.ray/auth_token``), with no Ray
      variable; a refused or missing token and an address where nothing answers are one line each, and
      nothing is said to be serving before the connection holds.
    * Node a's raylet is killed in the middle of the long job's training: the job goes back to the queue
      and waits (no CPU left), as does the short job that never got a slot.
    * Node b joins and gets both. It cannot see the run folders (a private mount namespace where their
      folder is an empty tmpfs; without root, ``SPIKERNEL_RAY_FOLDER=own``): its tasks work in their own
      folders and ship the models back. The long job keeps its candidates, with no row twice.
    """
    from raycluster import LoopbackCluster, can_hide_folders, free_port

    from engine.jobs.ray_driver import FOLDER_ENV, MARKER

    monkeypatch.setenv("SPIKERNEL_DATA", str(data["root"]))
    home, folder = tmp_path / "home", tmp_path / "store"
    home.mkdir()
    folder.mkdir()
    db = folder / "spikernel.db"
    watch = Store(db)
    long = submit(watch, data["dataset"], iterations=3, epochs=EPOCHS)
    short = submit(watch, data["dataset"], iterations=2, epochs=1)
    env = {"PYTHONPATH": str(ROOT), "SPIKERNEL_DATA": str(data["root"]), "OMP_NUM_THREADS": "1"}
    cluster = LoopbackCluster(home, {**os.environ, **env})
    driver = None
    try:
        cluster.generate_token()
        assert "Token authentication is enabled" in cluster.start_head()
        cluster.add_node("a", num_cpus=1)

        serve = ("--db", str(db), "worker", "--idle-exit", "1", "--ray")
        wrong = engine(cluster, *serve, cluster.address, RAY_AUTH_TOKEN="not-the-token")
        one_line_error(wrong, r"authentication failed, it refused the token from \$RAY_AUTH_TOKEN\. .*auth_token")
        none = engine(cluster, *serve, cluster.address, HOME=str(tmp_path))
        one_line_error(none, "authentication failed, it requires a token and this machine has none")
        nobody = engine(cluster, *serve, f"127.0.0.1:{free_port()}")
        one_line_error(nobody, "no Ray cluster at '127.0.0.1:[0-9]+' [(]nothing answers")
        assert watch.job(long["job_ids"][0])["attempts"] == 0  # none of them touched the queue

        log = tmp_path / "driver.log"
        with open(log, "w") as err:
            driver = subprocess.Popen(
                [sys.executable, "-m", "engine", *serve, cluster.address],
                cwd=ROOT,
                env=cluster.env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        long_run, long_job = long["run_ids"][0], long["job_ids"][0]
        wait_for(lambda: watch.run(long_run)["epochs_done"] >= 1, "the long job's first epoch", driver)
        before = watch.candidates(long_run)
        cluster.kill_raylet("a")
        wait_for(lambda: "queued again" in api.job_log(long_job, store=watch), "the lost task's job to be queued again")
        assert watch.job(long_job)["status"] in ("queued", "running")  # claimed again at most: no node to run on
        assert watch.job(short["job_ids"][0])["status"] in ("queued", "running")

        hidden = can_hide_folders()
        cluster.add_node("b", num_cpus=1, hide=folder if hidden else None, env=None if hidden else {FOLDER_ENV: "own"})
        assert driver.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
            driver.wait()
        cluster.stop()

    said = log.read_text()
    assert said.count("Ray worker serving") == 1 and f"on {cluster.address} (1 CPU, 0 GPU)" in said, said
    for ids, attempts in ((long, 2), (short, 1)):
        job = watch.job(ids["job_ids"][0])
        assert (job["status"], job["attempts"], job["error"]) == ("done", attempts, None), job
        (run,) = watch.runs([ids["experiment_id"]])
        assert "(own folder)" in api.job_log(job["id"], store=watch)
        path = watch.root / run["checkpoint"]
        assert sha256_file(path) == run["checkpoint_sha256"] and not (path.parent / MARKER).exists()
        assert str(load_model(path).genotype) == run["best_genotype"]
    assert "the Ray task was lost" in api.job_log(long_job, store=watch)
    assert watch.candidates(long_run) == before and len(before) == 3
    assert rows(db, 'SELECT count(*), count(DISTINCT "index") FROM candidates WHERE run_id = ?', long_run) == [(3, 3)]
    assert rows(db, "SELECT count(*), count(DISTINCT epoch) FROM epochs WHERE run_id = ?", long_run) == [
        (EPOCHS, EPOCHS)
    ]
