"""The worker as a real process: kill -9 mid-search and mid-training, crash-safe submits, concurrent
submitters, a failing checkpoint write. Everything runs on ``folder:tiny`` (real sample images)."""

from __future__ import annotations

import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from helpers import (
    ROOT,
    WAIT_S,
    ctrl_c,
    end_group,
    environment,
    finish,
    group_alive,
    kill9,
    start_in_terminal,
    start_worker,
    temporary_files,
    wait_for,
)

from engine import api
from engine.core.profiles import get_profile
from engine.core.space import KernelSet
from engine.data.images import load_dataset
from engine.jobs.worker import serve, worker_state
from engine.search.sampling import random_search
from engine.store import Store

pytestmark = pytest.mark.slow  # real worker processes, killed and restarted


def submit(store, studio, **changes) -> dict:
    base = dict(
        dataset=studio["dataset"], kernel_sets=("1x1_3x3",), iterations=3, epochs=1, device="cpu", baseline=None
    )
    return api.submit_experiment(api.ExperimentConfig(**{**base, **changes}), store=store)


def children(pid: int) -> set[int]:
    return {int(p) for task in Path(f"/proc/{pid}/task").iterdir() for p in (task / "children").read_text().split()}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("in_flight", [1, 2])
def test_kill_9_mid_search_resumes_to_the_same_candidates(tmp_path, studio, in_flight):
    """With candidates in flight too: what was reported done is a prefix, the scoring processes of a killed worker exit
    by themselves, and the resumed job ends with one-at-a-time's candidates."""
    store = Store(tmp_path / "s.db")
    ids = submit(store, studio, iterations=40, in_flight=in_flight)
    run_id = ids["run_ids"][0]
    worker = start_worker(store.path)
    wait_for(lambda: store.run(run_id)["candidates_done"] >= 8, "8 recorded candidates", worker)
    scoring = children(worker.pid)  # the scoring processes (and multiprocessing's resource tracker)
    if in_flight > 1:
        assert len(scoring) >= in_flight
    kill9(worker)
    wait_for(lambda: not any(alive(pid) for pid in scoring), "the orphaned scoring processes to exit")
    reported = store.candidates(run_id)
    assert store.run(run_id)["stage"] == "search" and 8 <= len(reported) < 40
    assert store.job(ids["job_ids"][0])["status"] == "running"  # as the dead worker left it

    finish(store.path)
    job, run = store.job(ids["job_ids"][0]), store.run(run_id)
    assert job["status"] == "done" and job["attempts"] == 2
    after = store.candidates(run_id)
    assert after[: len(reported)] == reported  # nothing reported done was lost or rewritten
    uninterrupted = random_search(KernelSet(1, 3), get_profile("laptop"), load_dataset(studio["dataset"]), 40, seed=0)
    assert [c["genotype"] for c in after] == [c.genotype.to_str() for c in uninterrupted.candidates]
    assert [c["score"] for c in after] == pytest.approx([c.score for c in uninterrupted.candidates], rel=1e-6)
    assert run["best_genotype"] == uninterrupted.best.genotype.to_str()
    assert "resume" in " ".join(api.events_frame(ids["experiment_id"], store=store)["message"])


def test_kill_9_mid_training_resumes_from_the_last_epoch(tmp_path, studio):
    store = Store(tmp_path / "s.db")
    killed = submit(store, studio, epochs=3)
    reference = submit(store, studio, epochs=3)  # the same arguments, run without interruption
    api.cancel(job_ids=reference["job_ids"], store=store)
    run_id = killed["run_ids"][0]
    worker = start_worker(store.path)
    wait_for(lambda: store.run(run_id)["epochs_done"] >= 1, "a recorded epoch", worker)
    kill9(worker)
    assert store.run(run_id)["stage"] == "train" and store.run(run_id)["epochs_done"] < 3
    api.retry(job_ids=reference["job_ids"], store=store)

    finish(store.path)
    runs = api.runs_frame(store=store).set_index("run_id")
    assert set(runs["status"]) == {"done"}
    epochs = api.epochs_frame([killed["experiment_id"], reference["experiment_id"]], store=store)
    mine = epochs[epochs["run_id"] == run_id].drop(columns=["run_id", "experiment_id", "seconds"])
    theirs = epochs[epochs["run_id"] == reference["run_ids"][0]].drop(columns=["run_id", "experiment_id", "seconds"])
    assert len(mine) == 3
    assert mine.reset_index(drop=True).equals(theirs.reset_index(drop=True))
    assert runs.loc[run_id, "accuracy"] == runs.loc[reference["run_ids"][0], "accuracy"]
    assert not (store.run_folder(killed["experiment_id"], "1x1_3x3_3x") / "train-state.pt").exists()
    log = store.log_path(killed["job_ids"][0]).read_text()
    logged = [int(e) for e in re.findall(r"epoch (\d+): loss", log)]
    assert logged == sorted(set(logged)) and logged[-1] == 3  # each epoch logged once, in order, after a resume
    assert re.search(r"attempt 2 .* from stage train, search finished, [12] epoch\(s\) recorded", log), log


@pytest.mark.parametrize(("stage", "in_flight"), [("search", 1), ("search", 2), ("train", 1)])
def test_ctrl_c_stops_the_worker_and_its_job_resumes_where_it_stopped(tmp_path, studio, stage, in_flight):
    """Ctrl-C in the worker's terminal (SIGINT to it and to its scoring processes): one line says it stops, the job
    goes back to the queue with everything it recorded, nothing is left running or half-written, and a restarted
    worker finishes the job from there."""
    store = Store(tmp_path / "s.db")
    search = stage == "search"
    ids = submit(store, studio, iterations=40 if search else 2, epochs=1 if search else 3, in_flight=in_flight)
    (run_id,), (job_id,) = ids["run_ids"], ids["job_ids"]
    worker = start_in_terminal("--db", str(store.path), "worker", "--idle-exit", "0.5")
    try:
        key, first = ("candidates_done", 3) if search else ("epochs_done", 1)
        wait_for(lambda: store.run(run_id)[key] >= first, f"{first} recorded {key}", worker)
        ctrl_c(worker)
        reported = store.candidates(run_id), store.epochs([run_id])  # done before the interrupt
        _, stderr = worker.communicate(timeout=WAIT_S)
        wait_for(lambda: not group_alive(worker), "the scoring processes to exit")
    finally:
        end_group(worker)
    assert worker.returncode == 0 and "Traceback" not in stderr, stderr
    said = [line for line in stderr.splitlines() if "stopping" in line]
    assert said == [STOPPING], stderr
    job, run = store.job(job_id), store.run(run_id)
    assert (job["status"], job["error"], run["stage"]) == ("queued", None, stage)
    stopped = store.candidates(run_id), store.epochs([run_id])
    assert [after[: len(before)] for before, after in zip(reported, stopped)] == list(reported)  # nothing lost
    assert temporary_files(tmp_path) == []
    if not search:
        assert 1 <= run["epochs_done"] < 3
        state = store.run_folder(ids["experiment_id"], "1x1_3x3_2x") / "train-state.pt"
        assert sorted(p.name for p in state.parent.iterdir()) == [state.name]
        assert torch.load(state, weights_only=True)["epoch"] == run["epochs_done"]
    assert "worker stopping; queued to resume" in api.job_log(job_id, store=store)

    finish(store.path)
    job, run = store.job(job_id), store.run(run_id)
    assert (job["status"], job["attempts"]) == ("done", 2)
    finished = store.candidates(run_id), store.epochs([run_id])
    assert [after[: len(before)] for before, after in zip(stopped, finished)] == list(stopped)
    assert len(finished[0]) == (40 if search else 2)
    assert [e["epoch"] for e in finished[1]] == ([1] if search else [1, 2, 3])
    log = api.job_log(job_id, store=store)
    recorded = f"{len(stopped[0])} candidates recorded" if search else f"search finished, {len(stopped[1])} epoch"
    assert re.search(rf"attempt 2 .* from stage {stage}, {recorded}", log), log


STOPPING = "stopping: running jobs go back to the queue at their next step (Ctrl-C again to abort now)"


def test_a_second_ctrl_c_aborts_the_worker_now_and_the_next_worker_resumes_its_job(tmp_path, studio):
    """A first Ctrl-C that cannot finish (the database is busy: the job cannot go back to the queue) leaves the
    worker waiting; a second one ends it at once (exit 130, no traceback), as a kill would: the job is left
    running, and the next worker takes it back from its last recorded epoch."""
    store = Store(tmp_path / "s.db")
    ids = submit(store, studio, iterations=2, epochs=3)
    (run_id,), (job_id,) = ids["run_ids"], ids["job_ids"]
    worker = start_in_terminal("--db", str(store.path), "worker")
    said: list[str] = []
    threading.Thread(target=lambda: said.extend(worker.stderr), daemon=True).start()
    busy = sqlite3.connect(store.path, isolation_level=None)
    try:
        wait_for(lambda: store.run(run_id)["epochs_done"] >= 1, "a recorded epoch", worker)
        busy.execute("BEGIN IMMEDIATE")  # another writer holds the database: the stopping job waits for it
        recorded = store.run(run_id)["epochs_done"]
        ctrl_c(worker)
        wait_for(lambda: STOPPING + "\n" in said, "the worker to say it stops", worker)
        ctrl_c(worker)
        worker.wait(timeout=WAIT_S)
    finally:
        busy.close()
        end_group(worker)
    assert worker.returncode == 130 and said[-1] == "interrupted\n" and "Traceback" not in "".join(said), said
    assert store.job(job_id)["status"] == "running" and store.run(run_id)["epochs_done"] == recorded  # as left

    finish(store.path)
    job, run = store.job(job_id), store.run(run_id)
    assert (job["status"], job["attempts"], run["epochs_done"]) == ("done", 2, 3)
    resumed = rf"attempt 2 .* from stage train, search finished, {recorded} epoch"
    assert re.search(resumed, api.job_log(job_id, store=store))


SUBMIT_LOOP = """
import sys
from engine import api
from engine.store import Store
store = Store(sys.argv[1])
config = api.ExperimentConfig(dataset=sys.argv[2], kernel_sets=("1x1_3x3", "3x3_5x5", "5x5_7x7"), iterations=3,
                              epochs=1, baseline="1x1_3x3_9x", device="cpu")
for _ in range(int(sys.argv[3])):
    api.submit_experiment(config, store=store)
    print("submitted", flush=True)
"""


# A submit killed at its N-th row: every row of one experiment is written in one transaction, so a kill at any
# of them (the experiment, each run, each job, the log line) leaves all of it or none, never a part.
SUBMIT_KILLED_AT = """
import os, signal, sys
import sqlite_utils.db
from engine import api
from engine.store import Store
store = Store(sys.argv[1])
config = api.ExperimentConfig(dataset=sys.argv[2], kernel_sets=("1x1_3x3", "3x3_5x5", "5x5_7x7"), iterations=3,
                              epochs=1, baseline="1x1_3x3_9x", device="cpu")
api.submit_experiment(config, store=store)  # one whole experiment first
rows, insert = 0, sqlite_utils.db.Table.insert
def counted(self, *args, **kwargs):
    global rows
    rows += 1
    if rows == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)
    return insert(self, *args, **kwargs)
sqlite_utils.db.Table.insert = counted
api.submit_experiment(config, store=store)
print("submitted", flush=True)
"""
ROWS_PER_SUBMIT = 1 + 4 + 4 + 1  # the experiment, 4 runs, 4 jobs, the log line


@pytest.mark.parametrize("killed_at", range(1, ROWS_PER_SUBMIT + 1))
def test_killing_a_submitter_at_any_row_never_leaves_half_an_experiment(tmp_path, studio, killed_at):
    db = tmp_path / "s.db"
    Store(db)
    env = environment()
    done = subprocess.run(
        [sys.executable, "-c", SUBMIT_KILLED_AT, str(db), studio["mini"], str(killed_at)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr  # the fault point was reached
    store = Store(db)
    per_experiment = store.query(
        "SELECT e.id, count(r.id) AS runs, count(j.id) AS jobs FROM experiments e "
        "LEFT JOIN runs r ON r.experiment_id = e.id LEFT JOIN jobs j ON j.run_id = r.id GROUP BY e.id"
    )
    assert [(e["runs"], e["jobs"]) for e in per_experiment] == [(4, 4)]  # the first whole, the killed one absent
    assert store.db["runs"].count == 4 and store.db["jobs"].count == 4


SUBMIT_SOME = """
import sys, time
from engine import api
from engine.store import Store
store = Store(sys.argv[1])
for i in range(3):
    api.submit_experiment(api.ExperimentConfig(dataset=sys.argv[2], kernel_sets=("1x1_3x3",), iterations=1,
                                               epochs=1, seed=i, device="cpu", baseline=None), store=store)
    time.sleep(0.3)
"""


def test_two_submitters_and_a_worker_at_once_lose_and_repeat_nothing(tmp_path, studio):
    store = Store(tmp_path / "s.db")
    env = environment()
    worker = start_worker(store.path, "--idle-exit", "600")
    wait_for(lambda: worker_state(store)["running"], "the worker's lock", worker)
    submitters = [
        subprocess.Popen([sys.executable, "-c", SUBMIT_SOME, str(store.path), studio["mini"]], cwd=ROOT, env=env)
        for _ in range(2)
    ]
    assert [s.wait(timeout=WAIT_S) for s in submitters] == [0, 0]
    wait_for(lambda: store.active_jobs() == 0, "an empty queue", worker)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, worker.stderr.read()
    jobs = store.jobs()
    assert len(jobs) == 6
    assert all(j["status"] == "done" and j["attempts"] == 1 for j in jobs)
    started = [m for m in api.events_frame(store=store)["message"] if ": started on " in m]
    assert len(started) == 6


def test_one_local_worker_per_database(tmp_path, studio):
    store = Store(tmp_path / "s.db")
    submit(store, studio, dataset=studio["mini"], iterations=200)
    first = start_worker(store.path)
    wait_for(lambda: worker_state(store)["running"], "the first worker's lock", first)
    second = start_worker(store.path)
    assert second.wait(timeout=60) == 2
    refusal = second.stderr.read()
    assert "a worker already serves" in refusal and "worker serving" not in refusal  # it never claimed to serve
    first.send_signal(signal.SIGTERM)  # stops at the next candidate and queues the job to resume
    assert first.wait(timeout=60) == 0
    job = store.jobs()[0]
    assert job["status"] == "queued" and not worker_state(store)["running"]


def test_a_failed_checkpoint_write_fails_the_job_readably_and_retry_completes_it(tmp_path, studio):
    store = Store(tmp_path / "s.db")
    ids = submit(store, studio, dataset=studio["mini"], epochs=2)
    blocker = store.run_folder(ids["experiment_id"], "1x1_3x3_3x") / "model.safetensors"
    blocker.mkdir(parents=True)  # the model file's name is taken by a folder: the write fails
    serve(store, devices=["cpu"], idle_exit=0.2, stop=threading.Event())
    job, run = store.job(ids["job_ids"][0]), store.run(ids["run_ids"][0])
    assert job["status"] == "failed" and job["error"].startswith("OutputError")  # the writer's own check
    assert job["error"].endswith("model.safetensors is a folder; name a file to write")
    assert run["stage"] == "train" and run["epochs_done"] == 2 and run["checkpoint"] is None
    assert "is a folder; name a file to write" in api.job_log(job["id"], store=store)

    shutil.rmtree(blocker)
    api.retry(ids["experiment_id"], store=store)
    serve(store, devices=["cpu"], idle_exit=0.2, stop=threading.Event())
    run = store.run(ids["run_ids"][0])
    assert store.job(ids["job_ids"][0])["status"] == "done" and run["epochs_done"] == 2
    assert run["checkpoint_sha256"] and (store.root / run["checkpoint"]).is_file()


def test_the_dashboard_starts_one_detached_worker_even_when_asked_twice(tmp_path, studio):
    store = Store(tmp_path / "s.db")
    pid = api.ensure_worker(store=store, idle_exit=0.5)
    assert pid and api.ensure_worker(store=store, idle_exit=0.5) is None  # starting: importing torch takes seconds
    state = worker_state(store)
    assert (state["running"] or state["starting"]) and state["pid"] == pid
    wait_for(lambda: worker_state(store)["running"], "the detached worker's lock")
    wait_for(lambda: not worker_state(store)["running"] and not worker_state(store)["starting"], "its idle exit")
    assert "a worker already serves" not in (store.root / "logs" / "worker.log").read_text()
