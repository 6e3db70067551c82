"""The local worker: a separate process that claims queued jobs and runs them, one per GPU or one on the CPU.

``python -m engine worker`` runs it in the foreground; the dashboard starts it detached on demand
(``start_worker``). A lock file beside the database lets one local worker serve one database, and
tells everyone else whether it is alive. Each running job heartbeats; a job whose worker died is taken
up again (at once by the next local worker, after ``stale_after`` seconds by any other).

Checking on a worker and starting one need no torch (the dashboard does both): the model stack
(``engine.jobs.execute``: search, training, checkpoints) is imported only where a job is prepared or run.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from engine.core.paths import PROJECT_ROOT
from engine.jobs.lifecycle import HEARTBEAT_S, StoreSink, close_logger, conclude, job_logger, log_attempt, run_spec
from engine.store import Lease, Store, this_host

POLL_S = 1.0  # an idle worker looks for new jobs this often
STALE_S = 60.0  # a running job without a heartbeat for this long is taken over
STARTING_S = 60.0  # a worker that has not taken its lock this long after its start failed to start


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
            command,
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started_path(store).write_text(str(process.pid))
    return process.pid


def run_job(
    store: Store,
    lease: Lease,
    device: str,
    shutdown: threading.Event | None = None,
    *,
    on_progress: Callable | None = None,
) -> str:
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
        from engine.jobs.execute import execute

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


def serve(
    store: Store,
    *,
    devices: list[str] | None = None,
    stale_after: float = STALE_S,
    idle_exit: float | None = None,
    stop: threading.Event | None = None,
    on_serving: Callable[[], None] | None = None,
) -> None:
    """Serve the store's queue until ``stop`` is set or, with ``idle_exit``, after that long without work.
    ``on_serving`` is called once this worker holds the database's worker lock (a second worker never does)."""
    stop = stop or threading.Event()
    name = f"{this_host()}:{os.getpid()}"
    with hold_lock(store):
        if on_serving is not None:
            on_serving()
        import engine.jobs.execute  # noqa: F401  (the model stack, loaded once here while the lock says who serves)

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
