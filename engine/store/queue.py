"""The job queue: each run's job, claimed by a worker under a lease, kept alive by heartbeats, ended,
released, cancelled or retried, and its log file."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import sqlite_utils

from engine.store.database import Database, StoreError, create_new


class JobStatus(StrEnum):
    """Where a job stands; the one spelling of each state for the store, the worker, the API and the pages."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)  # still to run or running: what a worker is started for
STOPPED = (JobStatus.FAILED, JobStatus.CANCELLED)  # ended before done: what can be retried


def this_host() -> str:
    return socket.gethostname()


@dataclass(frozen=True)
class Lease:
    """A claimed job. ``attempt`` fences it: once another worker re-claims the job, this lease's writes fail."""

    job_id: int
    run_id: int
    attempt: int
    worker: str


class JobLost(StoreError):
    """The job this worker runs was cancelled outright, deleted or taken over: stop without writing."""

    def __init__(self, job_id: int, status: str) -> None:
        super().__init__(f"job {job_id} is no longer this worker's (now {status})")
        self.job_id, self.status = job_id, status


def own(db: sqlite_utils.Database, lease: Lease) -> tuple[int, int]:
    """Inside a write: the job must still be running under this lease (not deleted, ended or re-claimed
    by another worker after a missed heartbeat). Returns (job id, run id)."""
    row = db.execute("SELECT status, attempts FROM jobs WHERE id = ?", [lease.job_id]).fetchone()
    if row is None or row[0] != JobStatus.RUNNING or row[1] != lease.attempt:
        raise JobLost(lease.job_id, "deleted" if row is None else row[0] if row[1] == lease.attempt else "re-claimed")
    return lease.job_id, lease.run_id


class Queue(Database):
    """The jobs: one per run, from queued to done, failed or cancelled."""

    def job(self, job_id: int) -> dict:
        row = self._one(
            "SELECT j.*, r.experiment_id, r.setting, r.stage AS run_stage FROM jobs j "
            "JOIN runs r ON r.id = j.run_id WHERE j.id = ?",
            [job_id],
        )
        if row is None:
            raise StoreError(f"there is no job {job_id}")
        return row

    def jobs(self, experiment_id: int | None = None, statuses: Sequence[str] | None = None) -> list[dict]:
        sql = (
            "SELECT j.*, r.experiment_id, r.setting, r.kernel_set, r.iterations, r.stage AS run_stage, "
            "r.candidates_done, r.best_score, r.epochs_done, r.accuracy, e.name AS experiment "
            "FROM jobs j JOIN runs r ON r.id = j.run_id JOIN experiments e ON e.id = r.experiment_id"
        )
        where, params = [], []
        if experiment_id is not None:
            where.append("r.experiment_id = ?")
            params.append(experiment_id)
        if statuses:
            where.append(f"j.status IN ({','.join('?' * len(statuses))})")
            params += list(statuses)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self.query(sql + " ORDER BY j.id", params)

    def claim(self, worker: str, device: str, *, stale_after: float) -> Lease | None:
        """Atomically take the oldest queued job, or a running one whose heartbeat stopped."""
        now = time.time()
        with self.write() as db:
            # Two index walks on jobs_by_status, each stopping at its first match: one OR sorted every
            # queued job (40-100 ms per claim with 100,000 queued, 2-core CPU).
            row = db.execute(
                "SELECT * FROM (SELECT id, status, worker FROM jobs WHERE status = ? "
                "AND cancel_requested = 0 ORDER BY id LIMIT 1) UNION ALL SELECT * FROM (SELECT id, status, "
                "worker FROM jobs WHERE status = ? AND heartbeat < ? ORDER BY id LIMIT 1) ORDER BY id LIMIT 1",
                [JobStatus.QUEUED, JobStatus.RUNNING, now - stale_after],
            ).fetchone()
            if row is None:
                return None
            job_id, status, previous = row
            db.execute(
                "UPDATE jobs SET status = ?, worker = ?, device = ?, heartbeat = ?, "
                "started = coalesce(started, ?), attempts = attempts + 1, error = NULL, finished = NULL WHERE id = ?",
                [JobStatus.RUNNING, worker, device, now, now, job_id],
            )
            job = self.job(job_id)
            taken = f"resumed from {previous}, whose heartbeat stopped" if status == JobStatus.RUNNING else "started"
            self.log(
                f"{job['setting']}: {taken} on {worker} ({device})",
                experiment_id=job["experiment_id"],
                run_id=job["run_id"],
            )
            return Lease(job_id, job["run_id"], job["attempts"], worker)

    def requeue_orphans(self, host: str, alive: str) -> int:
        """Jobs left running by dead workers of this host (their lock is free) go back to the queue."""
        with self.write() as db:
            orphans = self.query(
                "SELECT j.id, j.worker, r.experiment_id, r.id AS run_id, r.setting FROM jobs j "
                "JOIN runs r ON r.id = j.run_id WHERE j.status = ? AND j.worker LIKE ? AND j.worker != ?",
                [JobStatus.RUNNING, f"{host}:%", alive],
            )
            for o in orphans:
                db.execute("UPDATE jobs SET status = ? WHERE id = ?", [JobStatus.QUEUED, o["id"]])
                self.log(
                    f"{o['setting']}: worker {o['worker']} stopped mid-job; queued to resume",
                    level="warning",
                    experiment_id=o["experiment_id"],
                    run_id=o["run_id"],
                )
            return len(orphans)

    def heartbeat(self, lease: Lease, progress: dict) -> bool:
        """Record liveness and progress; returns whether a cancel was requested."""
        with self.write() as db:
            job_id, run_id = own(db, lease)
            db.execute(
                "UPDATE jobs SET heartbeat = ?, stage = ?, done = ?, total = ?, note = ?, eta_seconds = ? WHERE id = ?",
                [
                    time.time(),
                    progress.get("stage"),
                    progress.get("done", 0),
                    progress.get("total", 0),
                    progress.get("note"),
                    progress.get("eta_seconds"),
                    job_id,
                ],
            )
            return bool(db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", [job_id]).fetchone()[0])

    def end_job(self, lease: Lease, status: str, error: str | None = None) -> None:
        """A running job stops as failed or cancelled; what it recorded stays. Any other status is a
        ``ValueError`` and changes nothing."""
        if status not in STOPPED:
            raise ValueError(f"a job ends as failed or cancelled, not {status!r}")
        with self.write() as db:
            job_id, run_id = own(db, lease)
            db.execute(
                "UPDATE jobs SET status = ?, error = ?, finished = ?, eta_seconds = NULL WHERE id = ?",
                [status, error, time.time(), job_id],
            )
            job = self.job(job_id)
            message = f"{job['setting']}: {status}" + (f": {error}" if error else "")
            self.log(
                message,
                level="error" if status == JobStatus.FAILED else "info",
                experiment_id=job["experiment_id"],
                run_id=job["run_id"],
            )

    def release(self, lease: Lease) -> None:
        """The worker is shutting down: the job goes back to the queue and resumes later."""
        with self.write() as db:
            job_id, run_id = own(db, lease)
            db.execute("UPDATE jobs SET status = ? WHERE id = ?", [JobStatus.QUEUED, job_id])
            job = self.job(job_id)
            self.log(
                f"{job['setting']}: worker stopping; queued to resume",
                experiment_id=job["experiment_id"],
                run_id=run_id,
            )

    def request_cancel(self, job_ids: Iterable[int]) -> int:
        """Queued jobs are cancelled at once; running ones at their next check. Returns how many."""
        count = 0
        with self.write() as db:
            for job_id in job_ids:
                job = self.job(job_id)
                if job["status"] == JobStatus.QUEUED:
                    db.execute(
                        "UPDATE jobs SET status = ?, finished = ? WHERE id = ?",
                        [JobStatus.CANCELLED, time.time(), job_id],
                    )
                    self.log(f"{job['setting']}: cancelled", experiment_id=job["experiment_id"], run_id=job["run_id"])
                elif job["status"] == JobStatus.RUNNING:
                    db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", [job_id])
                    self.log(
                        f"{job['setting']}: cancel requested", experiment_id=job["experiment_id"], run_id=job["run_id"]
                    )
                else:
                    continue
                count += 1
        return count

    def retry(self, job_ids: Iterable[int]) -> int:
        """Failed or cancelled jobs go back to the queue; they resume from what they recorded."""
        count = 0
        with self.write() as db:
            for job_id in job_ids:
                job = self.job(job_id)
                if job["status"] not in STOPPED:
                    continue
                db.execute(
                    "UPDATE jobs SET status = ?, cancel_requested = 0, error = NULL, finished = NULL WHERE id = ?",
                    [JobStatus.QUEUED, job_id],
                )
                self.log(f"{job['setting']}: queued again", experiment_id=job["experiment_id"], run_id=job["run_id"])
                count += 1
        return count

    def active_jobs(self) -> int:
        return self.db.execute("SELECT count(*) FROM jobs WHERE status IN (?, ?)", ACTIVE).fetchone()[0]

    # --- the job's log file

    def log_path(self, job_id: int) -> Path | None:
        """The job's log, once a worker has created it (None before)."""
        row = self.db.execute("SELECT log FROM jobs WHERE id = ?", [job_id]).fetchone()
        return self.root / row[0] if row and row[0] else None

    def claim_log(self, job_id: int) -> Path:
        """The job's log file: the one recorded, or a new one created and recorded now."""
        with self.write() as db:
            path = self.log_path(job_id)
            if path is None:
                path = create_new(self.root / "logs", f"job-{job_id}", ".log", lambda p: open(p, "x").close())
                db.execute("UPDATE jobs SET log = ? WHERE id = ?", [str(path.relative_to(self.root)), job_id])
        return path
