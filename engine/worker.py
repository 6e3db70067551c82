"""The local worker: a separate process that claims queued jobs and runs them, one per GPU or one on the CPU.

``python -m engine worker`` runs it in the foreground; the dashboard starts it detached on demand
(``start_worker``). A lock file beside the database lets one local worker serve one database, and
tells everyone else whether it is alive. Each running job heartbeats; a job whose worker died is taken
up again (at once by the next local worker, after ``stale_after`` seconds by any other).

Checking on a worker and starting one need no torch (the dashboard does both): the model stack
(``engine.jobs``: search, training, checkpoints) is imported only where a job is prepared or run.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .store import JobLost, JobStatus, Lease, Store, this_host

if TYPE_CHECKING:
    from .jobs import RunSpec

HEARTBEAT_S = 2.0  # progress reaches the store this often; a cancel is noticed within this
POLL_S = 1.0  # an idle worker looks for new jobs this often
STALE_S = 60.0  # a running job without a heartbeat for this long is taken over
STARTING_S = 60.0  # a worker that has not taken its lock this long after its start failed to start
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class WorkerBusy(RuntimeError):
    """Another worker already serves this database."""


def lock_path(store: Store) -> Path:
    return store.path.with_name(store.path.name + ".worker.lock")


def started_path(store: Store) -> Path:
    return store.path.with_name(store.path.name + ".worker.started")


def _starting(store: Store) -> int | None:
    """The pid of a worker ``start_worker`` launched that is alive but has not taken its lock yet
    (importing torch takes seconds): starting another then would only see it fail on the lock."""
    path = started_path(store)
    try:
        pid = int(path.read_text())
        os.kill(pid, 0)
        fresh = time.time() - path.stat().st_mtime < STARTING_S
    except (OSError, ValueError):
        return None
    return pid if fresh else None  # one that never took its lock is not starting any more


def worker_state(store: Store) -> dict:
    """Whether a local worker serves this database, and which (pid, host, since) when it does;
    ``starting`` (with its pid) while one just launched is still starting up."""
    path = lock_path(store)
    if not path.exists():
        pid = _starting(store)
        return {"running": False, "starting": pid is not None, "pid": pid}
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid, _, rest = f.read().partition(" ")
            host, _, since = rest.partition(" ")
            return {"running": True, "pid": int(pid or 0), "host": host, "since": float(since or 0)}
        fcntl.flock(f, fcntl.LOCK_UN)
    pid = _starting(store)
    return {"running": False, "starting": pid is not None, "pid": pid}


@contextmanager
def hold_lock(store: Store):
    path = lock_path(store)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkerBusy(f"a worker already serves {store.path} (lock {path})") from None
        f.truncate(0)
        f.write(f"{os.getpid()} {this_host()} {time.time()}")
        f.flush()
        started_path(store).unlink(missing_ok=True)  # started: the lock speaks for it now
        yield


def start_worker(store: Store, *, idle_exit: float | None = 300.0) -> int | None:
    """Start a detached worker unless one runs; returns its pid (None when one was already running).

    It outlives the caller (its own session) and exits after ``idle_exit`` seconds without work.
    """
    state = worker_state(store)
    if state["running"] or state["starting"]:
        return None
    log = store.root / "logs" / "worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "engine", "--db", str(store.path), "worker"]
    if idle_exit is not None:
        command += ["--idle-exit", str(idle_exit)]
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    started_path(store).write_text(str(process.pid))
    return process.pid


def job_logger(store: Store, job_id: int) -> logging.Logger:
    """A logger writing to the job's own file beside the database (the dashboard shows its tail).

    Made outside logging's global registry: job ids repeat across databases, and a registered logger
    would keep the handler of another database's file.
    """
    logger = logging.Logger(f"spikernel.job.{job_id}", logging.INFO)
    path = store.claim_log(job_id)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)
    return logger


def close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)


def run_spec(store: Store, lease: Lease, device: str) -> RunSpec:
    """What the job needs from the store to start or resume."""
    from .jobs import RunSpec  # the model stack: loaded where work runs, never by the dashboard

    run = store.run(lease.run_id)
    config = store.experiment(run["experiment_id"])["config"]
    best = None
    if run["stage"] != "search":
        best = {"genotype": run["best_genotype"], "score": run["best_score"]}
    study = config.get("study")  # a study's run needs its scored cells again to plan what it trains
    return RunSpec(
        setting=run["setting"],
        dataset=config["dataset"],
        profile=config["profile"],
        epochs=config["epochs"],
        seed=config["seed"],
        precision=config["precision"],
        device=device if config["device"] == "auto" else config["device"],
        folder=str(store.run_folder(run["experiment_id"], run["setting"])),
        stage=run["stage"],
        done=store.candidates(lease.run_id) if run["stage"] == "search" or study else [],
        search_seconds=run["search_seconds"],
        best=best,
        exhaustive=config.get("exhaustive", False),
        study=study,
        trained=store.trained_cells([lease.run_id]) if study else [],
    )


class StoreSink:
    """Writes a local job's results straight to the store; progress goes out with each heartbeat."""

    def __init__(self, store: Store, lease: Lease, logger: logging.Logger, shutdown: threading.Event,
                 on_progress: Callable | None = None) -> None:  # fmt: skip
        self.store, self.lease, self.logger, self.shutdown = store, lease, logger, shutdown
        self.on_progress = on_progress
        self.state = {"stage": "search", "done": 0, "total": 0, "note": "", "eta_seconds": None}
        self.cancel = threading.Event()
        self.lost = threading.Event()

    def candidates(self, rows, search_seconds):
        self.store.add_candidates(self.lease, rows, search_seconds)

    def search_done(self, best, params, params_torch, seconds):
        self.store.finish_search(self.lease, best, params, params_torch, seconds)
        self.logger.info("search done: best %s, score %.3f, %d parameters", best["genotype"], best["score"], params)

    def epoch(self, record):
        self.store.add_epoch(self.lease, record)
        self.logger.info("epoch %d: loss %.4f, test accuracy %s", record["epoch"], record["train_loss"], record["test_accuracy"])

    def trained_cell(self, row):
        self.store.add_trained_cell(self.lease, row)
        self.logger.info("trained %s (%s, seed %d): test accuracy %.4f", row["genotype"], row["role"], row["seed"],
                         row["accuracy"])  # fmt: skip

    def progress(self, stage, done, total, note, eta_seconds):
        self.state = {"stage": stage, "done": done, "total": total, "note": note, "eta_seconds": eta_seconds}
        if self.on_progress is not None:
            self.on_progress(stage, done, total, note, eta_seconds)

    def should_stop(self) -> bool:
        return self.cancel.is_set() or self.lost.is_set() or self.shutdown.is_set()

    def beat(self) -> None:
        try:
            if self.store.heartbeat(self.lease, self.state):
                self.cancel.set()
        except JobLost:
            self.lost.set()


def error_text(error: BaseException) -> str:
    """How a failed job's error reads in the store: ``Type: message``."""
    return f"{type(error).__name__}: {error}"


def log_attempt(logger: logging.Logger, lease: Lease, spec: RunSpec, where: str = "") -> None:
    logger.info("attempt %d on %s (%s%s): %s from stage %s, %d candidates recorded",
                lease.attempt, lease.worker, spec.device, where, spec.setting, spec.stage, len(spec.done))  # fmt: skip


def conclude(store: Store, lease: Lease, sink: StoreSink, attempt: Callable[[], tuple[str, dict | None]]) -> str:
    """Run ``attempt`` and record how the job ended; returns its final status. Failures are recorded, never raised.

    ``attempt`` runs the job (or collects its outcome from elsewhere) and returns the run's folder and its
    results, None when it stopped early: then the job is cancelled, or queued again when its worker is
    stopping. An exception fails the job with ``Type: message``; a lost job is left alone.
    """
    logger = sink.logger
    try:
        folder, result = attempt()
        if result is None:
            if sink.lost.is_set():
                raise JobLost(lease.job_id, "taken away")
            if sink.cancel.is_set():
                store.end_job(lease, JobStatus.CANCELLED)
                logger.info("cancelled")
                return JobStatus.CANCELLED
            store.release(lease)
            logger.info("worker stopping; queued to resume")
            return JobStatus.QUEUED
        from .jobs import CHECKPOINT_NAME

        if "checkpoint_sha256" not in result:  # a study's run keeps no model
            store.finish_run(lease, result)
            logger.info("done: the top cell's accuracy %s", result["accuracy"])
            return JobStatus.DONE
        checkpoint = Path(folder) / CHECKPOINT_NAME
        store.finish_run(lease, {**result, "checkpoint": str(checkpoint.relative_to(store.root))})
        logger.info("done: accuracy %s, model %s", result["accuracy"], checkpoint)
        return JobStatus.DONE
    except JobLost as e:
        logger.warning("%s; stopped without writing", e)
        return "lost"
    except Exception as e:  # any failure ends this job, never the worker
        logger.error("failed:\n%s", traceback.format_exc())
        try:
            store.end_job(lease, JobStatus.FAILED, error_text(e))
        except JobLost:
            pass
        return JobStatus.FAILED


def run_job(store: Store, lease: Lease, device: str, shutdown: threading.Event | None = None, *,
            on_progress: Callable | None = None) -> str:  # fmt: skip
    """Run one claimed job to its end; returns its final status. Failures are recorded, never raised.

    When ``shutdown`` is set the job stops at its next check and goes back to the queue. ``on_progress``
    sees every progress report (stage, done, total, note, eta seconds) as it happens.
    """
    logger = job_logger(store, lease.job_id)
    sink = StoreSink(store, lease, logger, shutdown or threading.Event(), on_progress)
    stop_beating = threading.Event()

    def beat() -> None:
        while not stop_beating.wait(HEARTBEAT_S):
            sink.beat()

    def attempt() -> tuple[str, dict | None]:
        from .jobs import execute

        spec = run_spec(store, lease, device)
        log_attempt(logger, lease, spec)
        return spec.folder, execute(spec, sink)

    beater = threading.Thread(target=beat, name=f"heartbeat-{lease.job_id}", daemon=True)
    beater.start()
    try:
        return conclude(store, lease, sink, attempt)
    finally:
        stop_beating.set()
        beater.join()
        close_logger(logger)


def slot_devices() -> list[str]:
    """One slot per GPU when there are GPUs, else one on the CPU."""
    import torch

    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"]


def serve(store: Store, *, devices: list[str] | None = None, stale_after: float = STALE_S,
          idle_exit: float | None = None, stop: threading.Event | None = None) -> None:  # fmt: skip
    """Serve the store's queue until ``stop`` is set or, with ``idle_exit``, after that long without work."""
    stop = stop or threading.Event()
    name = f"{this_host()}:{os.getpid()}"
    with hold_lock(store):
        from . import jobs  # noqa: F401  (the model stack, loaded once here while the lock says who serves)

        store.requeue_orphans(this_host(), alive=name)
        store.log(f"worker {name} started")
        busy = [False] * len(devices or slot_devices())
        idle_since = [time.monotonic()]

        def slot(index: int, device: str) -> None:
            slot_store = Store(store.path)  # sqlite connections stay in their thread
            while not stop.is_set():
                lease = slot_store.claim(name, device, stale_after=stale_after)
                if lease is None:
                    stop.wait(POLL_S)
                    continue
                busy[index] = True
                run_job(slot_store, lease, device, stop)
                busy[index] = False
                idle_since[0] = time.monotonic()

        threads = [
            threading.Thread(target=slot, args=(i, d), name=f"slot-{d}", daemon=True)
            for i, d in enumerate(devices or slot_devices())
        ]
        for t in threads:
            t.start()
        while not stop.wait(POLL_S):
            if idle_exit is not None and not any(busy) and time.monotonic() - idle_since[0] > idle_exit:
                if store.active_jobs() == 0:
                    break
                idle_since[0] = time.monotonic()
        stop.set()
        for t in threads:
            t.join()
        store.log(f"worker {name} stopped")
