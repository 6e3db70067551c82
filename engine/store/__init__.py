"""The experiment store: one SQLite file, and the only package that writes SQL.

Tables: experiments (config as JSON), runs (one per setting, with its results), candidates (every
scored cell), epochs (per run and epoch), trained_cells (a study's cells trained per seed), jobs (the
execution state of each run: status, progress, heartbeat, worker, error, cancel request) and events (a log
a user reads).

Every connection runs in WAL mode with a busy timeout, one connection per thread. Writes that belong
together happen in one ``BEGIN IMMEDIATE`` transaction, so a crash or kill at any instant leaves either
all of them or none. Values are always bound parameters, never formatted into SQL.

``Store`` is one class over three modules, each one concept: ``database`` (the file, connections,
schema and migrations, the write transaction, the events log), ``queue`` (jobs, leases, heartbeats,
cancel and retry, job logs) and ``results`` (experiments, runs, candidates, epochs, trained cells,
deployment measurements, pace).
"""

from __future__ import annotations

from engine.store.database import (
    APPLICATION_ID,
    BUSY_TIMEOUT_S,
    DB_ENV,
    MIGRATIONS,
    SCHEMA_VERSION,
    TABLES,
    Database,
    StoreError,
    default_db_path,
)
from engine.store.queue import ACTIVE, STOPPED, JobLost, JobStatus, Lease, Queue, this_host
from engine.store.results import CANDIDATE_COLUMNS, EPOCH_COLUMNS, TRAINED_CELL_COLUMNS, Results

__all__ = [
    "ACTIVE",
    "APPLICATION_ID",
    "BUSY_TIMEOUT_S",
    "CANDIDATE_COLUMNS",
    "DB_ENV",
    "EPOCH_COLUMNS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "STOPPED",
    "TABLES",
    "TRAINED_CELL_COLUMNS",
    "JobLost",
    "JobStatus",
    "Lease",
    "Store",
    "StoreError",
    "default_db_path",
    "this_host",
]


class Store(Queue, Results, Database):
    """The experiment database: its job queue and its results, over one connection per thread.

    Opening it is ``Database``'s (only this project's databases; ``create``, ``readonly``). A job's
    results are written under its ``Lease``: once the job is no longer that lease's, the write raises
    ``JobLost`` and changes nothing.
    """
