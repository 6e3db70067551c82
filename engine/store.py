"""The experiment store: one SQLite file, the only module that writes SQL.

Tables: experiments (config as JSON), runs (one per setting, with its results), candidates (every
scored cell), epochs (per run and epoch), jobs (the execution state of each run: status, progress,
heartbeat, worker, error, cancel request) and events (a log a user reads).

Every connection runs in WAL mode with a busy timeout, one connection per thread. Writes that belong
together happen in one ``BEGIN IMMEDIATE`` transaction, so a crash or kill at any instant leaves either
all of them or none. Values are always bound parameters, never formatted into SQL.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import sqlite_utils

from .datasets import default_data_root

DB_ENV = "SPIKERNEL_DB"
BUSY_TIMEOUT_S = 30.0
# SQLite's application_id of this project's databases ("SpKr"): another application's file is refused.
APPLICATION_ID = 0x53704B72
TABLES = frozenset({"experiments", "runs", "candidates", "epochs", "jobs", "events"})  # every version has them


class StoreError(RuntimeError):
    """The database cannot be used as asked (newer schema, unknown id, a forbidden change)."""


class JobStatus(StrEnum):
    """Where a job stands; the one spelling of each state for the store, the worker, the API and the pages."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)  # still to run or running: what a worker is started for
STOPPED = (JobStatus.FAILED, JobStatus.CANCELLED)  # ended before done: what can be retried


def default_db_path() -> Path:
    """``$SPIKERNEL_DB`` if set, else ``spikernel.db`` in the data root."""
    env = os.environ.get(DB_ENV)
    return Path(env).expanduser() if env else default_data_root() / "spikernel.db"


def this_host() -> str:
    return socket.gethostname()


# ----------------------------------------------------------------------------------------- schema

_V1 = """
CREATE TABLE experiments (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    dataset TEXT NOT NULL,
    profile TEXT NOT NULL,
    reduced INTEGER NOT NULL,
    baseline TEXT,
    created REAL NOT NULL
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    experiment_id INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    setting TEXT NOT NULL,
    kernel_set TEXT NOT NULL,
    iterations INTEGER NOT NULL,
    is_baseline INTEGER NOT NULL DEFAULT 0,
    stage TEXT NOT NULL DEFAULT 'search' CHECK (stage IN ('search', 'train', 'done')),
    candidates_done INTEGER NOT NULL DEFAULT 0,
    search_seconds REAL NOT NULL DEFAULT 0,
    best_genotype TEXT,
    best_score REAL,
    params INTEGER,
    params_torch INTEGER,
    epochs_done INTEGER NOT NULL DEFAULT 0,
    train_seconds REAL NOT NULL DEFAULT 0,
    accuracy REAL,
    firing_rate REAL,
    checkpoint TEXT,
    checkpoint_bytes INTEGER,
    checkpoint_sha256 TEXT,
    finished REAL,
    UNIQUE (experiment_id, setting)
);
CREATE TABLE candidates (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    "index" INTEGER NOT NULL,
    genotype TEXT NOT NULL,
    score REAL NOT NULL,
    params INTEGER NOT NULL,
    params_torch INTEGER NOT NULL,
    conv_edges INTEGER NOT NULL,
    silent_layers INTEGER NOT NULL,
    firing_rate REAL NOT NULL,
    seconds REAL NOT NULL,
    PRIMARY KEY (run_id, "index")
) WITHOUT ROWID;
CREATE TABLE epochs (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    train_loss REAL NOT NULL,
    train_accuracy REAL NOT NULL,
    test_accuracy REAL,
    firing_rate REAL,
    seconds REAL NOT NULL,
    lr REAL NOT NULL,
    PRIMARY KEY (run_id, epoch)
) WITHOUT ROWID;
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL UNIQUE REFERENCES runs(id) ON DELETE CASCADE,
    status TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    stage TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    note TEXT,
    eta_seconds REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    device TEXT,
    error TEXT,
    log TEXT,
    created REAL NOT NULL,
    started REAL,
    heartbeat REAL,
    finished REAL
);
CREATE INDEX jobs_by_status ON jobs (status, id);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    experiment_id INTEGER REFERENCES experiments(id) ON DELETE CASCADE,
    run_id INTEGER REFERENCES runs(id) ON DELETE CASCADE,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX events_by_experiment ON events (experiment_id, id);
CREATE INDEX events_by_run ON events (run_id);
"""

# Each experiment's folder is created by the database and recorded, so no new experiment adopts files left
# by another database (an emptied or replaced file restarts its ids at 1). Older ones keep their folder.
_V2 = """
ALTER TABLE experiments ADD COLUMN folder TEXT;
UPDATE experiments SET folder = 'experiments/' || id;
"""

# What the worker measures after training (engine.deploy): test accuracy with 8- and 4-bit weights,
# synaptic operations per test image (ACs fed by spikes, MACs fed by analog values, and the same network's
# MACs as an ANN) and the per-layer details as JSON.
_V3 = """
ALTER TABLE runs ADD COLUMN accuracy_8bit REAL;
ALTER TABLE runs ADD COLUMN accuracy_4bit REAL;
ALTER TABLE runs ADD COLUMN synops REAL;
ALTER TABLE runs ADD COLUMN macs REAL;
ALTER TABLE runs ADD COLUMN ann_macs REAL;
ALTER TABLE runs ADD COLUMN deploy TEXT;
"""

# A study (engine.study) is an experiment of its own kind whose runs also train a stratified subset of their
# scored cells: one row per (cell, seed) trained, with why it was chosen and what it reached.
_V4 = """
ALTER TABLE experiments ADD COLUMN kind TEXT NOT NULL DEFAULT 'experiment' CHECK (kind IN ('experiment', 'study'));
CREATE TABLE trained_cells (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    genotype TEXT NOT NULL,
    seed INTEGER NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('top', 'random', 'spread')),
    candidate INTEGER NOT NULL,
    score REAL NOT NULL,
    conv_edges INTEGER NOT NULL,
    params INTEGER NOT NULL,
    accuracy REAL NOT NULL,
    train_accuracy REAL NOT NULL,
    firing_rate REAL,
    seconds REAL NOT NULL,
    PRIMARY KEY (run_id, genotype, seed)
) WITHOUT ROWID;
"""

# Each entry upgrades the schema by one version; a database remembers its version in user_version.
# Append, never edit: a newer release opens an older database by running the entries it lacks.
MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4)
SCHEMA_VERSION = len(MIGRATIONS)

CANDIDATE_COLUMNS = (
    "index", "genotype", "score", "params", "params_torch", "conv_edges", "silent_layers", "firing_rate", "seconds",
)  # fmt: skip
TRAINED_CELL_COLUMNS = ("genotype", "seed", "role", "candidate", "score", "conv_edges", "params", "accuracy",
                        "train_accuracy", "firing_rate", "seconds")  # fmt: skip
EPOCH_COLUMNS = ("epoch", "train_loss", "train_accuracy", "test_accuracy", "firing_rate", "seconds", "lr")


def _refuse(path: Path, why: str) -> StoreError:
    return StoreError(f"{path} {why}; it was left untouched")


def _inspect(path: Path, *, create: bool) -> bool:
    """Whether ``path`` is this project's database (True) or free to create one at (False); raises
    ``StoreError`` for anything else: a folder, an empty or foreign file, a missing parent folder."""
    if path.is_dir():
        raise StoreError(f"{path} is a folder, not a database file")
    if not path.exists():
        if not create:
            raise StoreError(f"there is no experiment database at {path} (check the path)")
        if not path.parent.is_dir():
            raise StoreError(f"cannot create a database at {path}: folder {path.parent} does not exist")
        return False
    # Never open the file other than through SQLite: closing any other handle on it would drop this
    # process's POSIX locks on it, which SQLite's own connections rely on.
    if path.stat().st_size == 0:
        raise _refuse(path, "is empty (0 bytes), not an experiment database; restore it, or move it away together "
                            "with the experiments/ and logs/ folders beside it to start a new one")  # fmt: skip
    try:
        conn = _connect(path, readonly=True)
        try:
            application_id = conn.execute("PRAGMA application_id").fetchall()[0][0]
            version = conn.execute("PRAGMA user_version").fetchall()[0][0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise _refuse(path, f"is not a readable SQLite database ({e})") from None
    if application_id == APPLICATION_ID:
        return True
    if application_id == 0 and version >= 1 and TABLES <= tables:  # written before databases carried the id
        return True
    raise _refuse(path, "is another application's SQLite database, not a SpiKernel Studio one")


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    if readonly:
        # Opened read-only by SQLite itself. Without a write-ahead log beside it (nobody has it open, the last
        # writer finished), the file is complete and read as immutable: SQLite then creates no -wal/-shm files.
        from urllib.parse import quote

        live = path.with_name(path.name + "-wal").exists()
        uri = f"file:{quote(str(path))}?mode=ro" + ("" if live else "&immutable=1")
        return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    return sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)


class Store:
    """One SQLite database and the folder beside it (experiment files and job logs).

    Only this project's databases are opened (SQLite's ``application_id``; an empty, damaged or foreign
    file is refused, never recreated). ``create`` allows a new database where there is no file yet (its
    folder must exist); ``readonly`` opens an existing one without changing anything, not even its schema.
    """

    def __init__(self, path: str | Path | None = None, *, create: bool = True, readonly: bool = False) -> None:
        path = Path(path) if path is not None else default_db_path()
        try:
            self.path = path.expanduser().resolve()
            self.readonly = readonly
            self._local = threading.local()
            if not _inspect(self.path, create=create and not readonly):
                self._create()
            self._migrate()
        except sqlite3.Error as e:
            raise StoreError(f"{path} cannot be used as an experiment database: {e}") from None
        except OSError as e:  # unreadable, no permission, a name too long
            raise StoreError(f"cannot open the experiment database {path}: {e.strerror or e}") from None
        except ValueError as e:  # a name with a NUL byte
            raise StoreError(f"cannot open the experiment database {str(path)!r}: {e}") from None

    def _create(self) -> None:
        """A new database, complete before it appears under its name (no moment when it is an empty file)."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.new")
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("BEGIN IMMEDIATE")
                for script in MIGRATIONS:
                    for statement in script.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            finally:
                conn.close()
            try:
                os.link(tmp, self.path)  # never replaces a database another process just created
            except FileExistsError:
                _inspect(self.path, create=False)
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
                leftover.unlink(missing_ok=True)

    # --- connections and transactions

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection (sqlite3 connections must not cross threads)."""
        db = getattr(self._local, "db", None)
        if db is None:
            conn = _connect(self.path, readonly=self.readonly)
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if not self.readonly:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across process crashes
            conn.execute("PRAGMA foreign_keys = ON")
            db = self._local.db = sqlite_utils.Database(conn, execute_plugins=False)
        return db

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    @contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction, taking the write lock at once (no upgrade deadlocks between writers)."""
        db = self.db
        if db.conn.in_transaction:  # nested: part of the outer transaction
            yield db
            return
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.conn.execute("ROLLBACK")
            raise
        db.conn.execute("COMMIT")

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer SpiKernel Studio (schema {version}, this release "
                f"knows {SCHEMA_VERSION}); upgrade, or point SPIKERNEL_DB at another file"
            )
        if self.readonly or (version == SCHEMA_VERSION and self._application_id() == APPLICATION_ID):
            return
        with self.write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for script in MIGRATIONS[version:]:
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
            if version < SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    def _application_id(self) -> int:
        return self.db.execute("PRAGMA application_id").fetchone()[0]

    def query(self, sql: str, params: Sequence | dict = ()) -> list[dict]:
        return list(self.db.query(sql, params))

    def _one(self, sql: str, params: Sequence = ()) -> dict | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    # --- files beside the database

    @property
    def root(self) -> Path:
        return self.path.parent

    def experiment_folder(self, experiment_id: int) -> Path:
        """The folder this database created for the experiment (``experiments/<id>`` unless that was taken)."""
        row = self._one("SELECT * FROM experiments WHERE id = ?", [experiment_id])
        if row is None:
            raise StoreError(f"there is no experiment {experiment_id}")
        return self.root / (row.get("folder") or f"experiments/{experiment_id}")

    def run_folder(self, experiment_id: int, setting: str) -> Path:
        return self.experiment_folder(experiment_id) / setting

    def log_path(self, job_id: int) -> Path | None:
        """The job's log, once a worker has created it (None before)."""
        row = self.db.execute("SELECT log FROM jobs WHERE id = ?", [job_id]).fetchone()
        return self.root / row[0] if row and row[0] else None

    def claim_log(self, job_id: int) -> Path:
        """The job's log file: the one recorded, or a new one created and recorded now."""
        with self.write() as db:
            path = self.log_path(job_id)
            if path is None:
                path = _claim(self.root / "logs", f"job-{job_id}", ".log", lambda p: open(p, "x").close())
                db.execute("UPDATE jobs SET log = ? WHERE id = ?", [str(path.relative_to(self.root)), job_id])
        return path

    # --- experiments

    def add_experiment(self, name: str, config: dict, *, profile: str, reduced: bool, runs: list[dict],
                       kind: str = "experiment") -> dict:  # fmt: skip
        """The experiment (or study), its runs and one queued job per run, in one transaction."""
        now = time.time()
        with self.write() as db:
            experiment_id = db["experiments"].insert(
                {
                    "name": name,
                    "config": json.dumps(config, sort_keys=True),
                    "dataset": config["dataset"],
                    "profile": profile,
                    "reduced": int(reduced),
                    "baseline": config.get("baseline"),
                    "created": now,
                    "kind": kind,
                }
            ).last_pk
            folder = _claim(self.root / "experiments", str(experiment_id), "", Path.mkdir)
            try:
                db["experiments"].update(experiment_id, {"folder": str(folder.relative_to(self.root))})
                run_ids, job_ids = [], []
                for position, run in enumerate(runs):
                    row = {**run, "experiment_id": experiment_id, "position": position}
                    run_ids.append(db["runs"].insert(row).last_pk)
                    job_ids.append(db["jobs"].insert({"run_id": run_ids[-1], "created": now, "total": run["iterations"]}).last_pk)
                self.log(f"submitted '{name}' with {len(runs)} run(s)", experiment_id=experiment_id)
            except BaseException:
                folder.rmdir()
                raise
        return {"experiment_id": experiment_id, "run_ids": run_ids, "job_ids": job_ids}

    def experiment(self, experiment_id: int) -> dict:
        row = self._one("SELECT * FROM experiments WHERE id = ?", [experiment_id])
        if row is None:
            raise StoreError(f"there is no experiment {experiment_id}")
        return {"kind": "experiment", **row, "config": json.loads(row["config"])}  # no kind: before studies

    def experiments(self) -> list[dict]:
        """Every experiment, newest first, with its status summarised from its jobs, and its kind
        (``experiment`` or ``study``; a read-only database of a release before studies has experiments only)."""
        rows = self.query(
            """
            SELECT e.*,
                   count(j.id) AS runs,
                   sum(j.status = :done) AS done,
                   sum(j.status = :running) AS running,
                   sum(j.status = :queued) AS queued,
                   sum(j.status = :failed) AS failed,
                   sum(j.status = :cancelled) AS cancelled
            FROM experiments e LEFT JOIN runs r ON r.experiment_id = e.id LEFT JOIN jobs j ON j.run_id = r.id
            GROUP BY e.id ORDER BY e.id DESC
            """,
            {status.value: status.value for status in JobStatus},
        )
        for row in rows:
            row.pop("config"), row.pop("folder", None)  # the list shows neither
            row.setdefault("kind", "experiment")
        return rows

    def delete_experiment(self, experiment_id: int) -> None:
        with self.write() as db:
            self.experiment(experiment_id)
            busy = db.execute(
                "SELECT count(*) FROM jobs j JOIN runs r ON r.id = j.run_id "
                "WHERE r.experiment_id = ? AND j.status = ?",
                [experiment_id, JobStatus.RUNNING],
            ).fetchone()[0]
            if busy:
                raise StoreError(f"experiment {experiment_id} has {busy} running job(s); cancel it first")
            db.execute("DELETE FROM experiments WHERE id = ?", [experiment_id])

    # --- runs, candidates, epochs

    def run(self, run_id: int) -> dict:
        row = self._one("SELECT * FROM runs WHERE id = ?", [run_id])
        if row is None:
            raise StoreError(f"there is no run {run_id}")
        return row

    def runs(self, experiment_ids: Iterable[int] | None = None) -> list[dict]:
        """Runs with their job's state, in submission order."""
        sql = (
            "SELECT r.*, e.name AS experiment, e.profile, e.reduced, e.dataset, j.id AS job_id, j.status, "
            "j.error FROM runs r JOIN experiments e ON e.id = r.experiment_id JOIN jobs j ON j.run_id = r.id"
        )
        if experiment_ids is None:
            return self.query(sql + " ORDER BY r.experiment_id, r.position")
        ids = list(experiment_ids)
        marks = ",".join("?" * len(ids))
        return self.query(sql + f" WHERE r.experiment_id IN ({marks}) ORDER BY r.experiment_id, r.position", ids)

    def candidates(self, run_id: int) -> list[dict]:
        columns = ", ".join(f'"{c}"' for c in CANDIDATE_COLUMNS)
        return self.query(f'SELECT {columns} FROM candidates WHERE run_id = ? ORDER BY "index"', [run_id])

    def pace(self, profile: str, dataset: str, device_type: str) -> dict:
        """Seconds per search candidate and per training epoch over the finished runs of ``profile`` on
        ``dataset`` whose jobs ran on this kind of device (``cpu`` or ``cuda``; locally or through Ray).
        Values are None without such runs."""
        return self.query(
            "SELECT sum(r.search_seconds) / sum(r.candidates_done) AS per_candidate, "
            "sum(r.train_seconds) / sum(r.epochs_done) AS per_epoch FROM runs r "
            "JOIN experiments e ON e.id = r.experiment_id JOIN jobs j ON j.run_id = r.id "
            "WHERE e.profile = ? AND e.dataset = ? AND r.stage = 'done' "
            "AND (j.device = ? OR j.device LIKE ? || ':%' OR j.device = 'ray:' || ?)",
            [profile, dataset, device_type, device_type, device_type],
        )[0]

    def epochs(self, run_ids: Iterable[int]) -> list[dict]:
        ids = list(run_ids)
        marks = ",".join("?" * len(ids))
        return self.query(f"SELECT * FROM epochs WHERE run_id IN ({marks}) ORDER BY run_id, epoch", ids)

    def add_candidates(self, lease: Lease, rows: Sequence[dict], search_seconds: float) -> None:
        """A batch of scored candidates with the run's search time so far, together."""
        with self.write() as db:
            job_id, run_id = self._own(lease)
            db["candidates"].insert_all(
                ({"run_id": run_id, **{c: r[c] for c in CANDIDATE_COLUMNS}} for r in rows), replace=True
            )
            db.execute(
                "UPDATE runs SET candidates_done = (SELECT count(*) FROM candidates WHERE run_id = ?), "
                "search_seconds = ? WHERE id = ?",
                [run_id, search_seconds, run_id],
            )

    def finish_search(self, lease: Lease, best: dict, params: int, params_torch: int, seconds: float) -> None:
        with self.write() as db:
            job_id, run_id = self._own(lease)
            db["runs"].update(
                run_id,
                {
                    "stage": "train",
                    "best_genotype": best["genotype"],
                    "best_score": best["score"],
                    "params": params,
                    "params_torch": params_torch,
                    "search_seconds": seconds,
                },
            )
            run = self.run(run_id)
            self.log(
                f"{run['setting']}: search done in {seconds:.1f} s, best cell {best['genotype']} "
                f"(score {best['score']:.2f}, {params:,} parameters)",
                experiment_id=run["experiment_id"],
                run_id=run_id,
            )

    def add_epoch(self, lease: Lease, record: dict) -> None:
        """One finished epoch; writing the same epoch again replaces it (a resumed run repeats it exactly)."""
        with self.write() as db:
            job_id, run_id = self._own(lease)
            db["epochs"].insert({"run_id": run_id, **{c: record[c] for c in EPOCH_COLUMNS}}, replace=True)
            db.execute(
                "UPDATE runs SET epochs_done = (SELECT count(*) FROM epochs WHERE run_id = ?), "
                "train_seconds = (SELECT sum(seconds) FROM epochs WHERE run_id = ?) WHERE id = ?",
                [run_id, run_id, run_id],
            )

    def add_trained_cell(self, lease: Lease, row: dict) -> None:
        """One (cell, seed) of a study trained; the same again replaces it (a resumed study repeats it exactly)."""
        with self.write() as db:
            job_id, run_id = self._own(lease)
            db["trained_cells"].insert({"run_id": run_id, **{c: row[c] for c in TRAINED_CELL_COLUMNS}}, replace=True)

    def trained_cells(self, run_ids: Iterable[int]) -> list[dict]:
        """A study's trained cells with their run's kernel set, in the order they were planned."""
        ids = list(run_ids)
        marks = ",".join("?" * len(ids))
        return self.query(
            f"SELECT t.*, r.kernel_set FROM trained_cells t JOIN runs r ON r.id = t.run_id "
            f"WHERE t.run_id IN ({marks}) ORDER BY t.run_id, t.candidate, t.seed",
            ids,
        )

    def finish_run(self, lease: Lease, result: dict) -> None:
        """The trained model is saved: the run is done and so is its job."""
        now = time.time()
        with self.write() as db:
            job_id, run_id = self._own(lease)
            db["runs"].update(run_id, {**result, "stage": "done", "finished": now})
            db["jobs"].update(job_id, {"status": JobStatus.DONE, "finished": now, "note": "done", "eta_seconds": 0})
            run = self.run(run_id)
            accuracy = "n/a" if result.get("accuracy") is None else f"{result['accuracy']:.1%}"
            self.log(f"{run['setting']}: done, accuracy {accuracy}", experiment_id=run["experiment_id"], run_id=run_id)

    DEPLOY_COLUMNS = ("accuracy_8bit", "accuracy_4bit", "synops", "macs", "ann_macs", "deploy")

    def record_deploy(self, run_id: int, values: dict) -> None:
        """Measurements of a finished run's model taken after the fact (``engine.api.measure_run``)."""
        with self.write() as db:
            self.run(run_id)
            db["runs"].update(run_id, {k: values[k] for k in self.DEPLOY_COLUMNS})

    # --- jobs

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

    def _own(self, lease: Lease) -> tuple[int, int]:
        """Inside a write: the job must still be running under this lease (not deleted, ended or re-claimed
        by another worker after a missed heartbeat). Returns (job id, run id)."""
        row = self.db.execute("SELECT status, attempts FROM jobs WHERE id = ?", [lease.job_id]).fetchone()
        if row is None or row[0] != JobStatus.RUNNING or row[1] != lease.attempt:
            raise JobLost(lease.job_id, "deleted" if row is None else row[0] if row[1] == lease.attempt else "re-claimed")
        return lease.job_id, lease.run_id

    def heartbeat(self, lease: Lease, progress: dict) -> bool:
        """Record liveness and progress; returns whether a cancel was requested."""
        with self.write() as db:
            job_id, run_id = self._own(lease)
            db.execute(
                "UPDATE jobs SET heartbeat = ?, stage = ?, done = ?, total = ?, note = ?, eta_seconds = ? WHERE id = ?",
                [time.time(), progress.get("stage"), progress.get("done", 0), progress.get("total", 0),
                 progress.get("note"), progress.get("eta_seconds"), job_id],
            )  # fmt: skip
            return bool(db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", [job_id]).fetchone()[0])

    def end_job(self, lease: Lease, status: str, error: str | None = None) -> None:
        """A running job stops as failed or cancelled; what it recorded stays. Any other status is a
        ``ValueError`` and changes nothing."""
        if status not in STOPPED:
            raise ValueError(f"a job ends as failed or cancelled, not {status!r}")
        with self.write() as db:
            job_id, run_id = self._own(lease)
            db.execute(
                "UPDATE jobs SET status = ?, error = ?, finished = ?, eta_seconds = NULL WHERE id = ?",
                [status, error, time.time(), job_id],
            )
            job = self.job(job_id)
            message = f"{job['setting']}: {status}" + (f": {error}" if error else "")
            self.log(message, level="error" if status == JobStatus.FAILED else "info",
                     experiment_id=job["experiment_id"], run_id=job["run_id"])  # fmt: skip

    def release(self, lease: Lease) -> None:
        """The worker is shutting down: the job goes back to the queue and resumes later."""
        with self.write() as db:
            job_id, run_id = self._own(lease)
            db.execute("UPDATE jobs SET status = ? WHERE id = ?", [JobStatus.QUEUED, job_id])
            job = self.job(job_id)
            self.log(f"{job['setting']}: worker stopping; queued to resume",
                     experiment_id=job["experiment_id"], run_id=run_id)  # fmt: skip

    def request_cancel(self, job_ids: Iterable[int]) -> int:
        """Queued jobs are cancelled at once; running ones at their next check. Returns how many."""
        count = 0
        with self.write() as db:
            for job_id in job_ids:
                job = self.job(job_id)
                if job["status"] == JobStatus.QUEUED:
                    db.execute("UPDATE jobs SET status = ?, finished = ? WHERE id = ?",
                               [JobStatus.CANCELLED, time.time(), job_id])  # fmt: skip
                    self.log(f"{job['setting']}: cancelled", experiment_id=job["experiment_id"], run_id=job["run_id"])
                elif job["status"] == JobStatus.RUNNING:
                    db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", [job_id])
                    self.log(f"{job['setting']}: cancel requested", experiment_id=job["experiment_id"], run_id=job["run_id"])
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

    # --- events

    def log(self, message: str, *, level: str = "info", experiment_id: int | None = None, run_id: int | None = None) -> None:
        with self.write() as db:
            db["events"].insert(
                {"time": time.time(), "experiment_id": experiment_id, "run_id": run_id, "level": level, "message": message}
            )

    def events(self, experiment_id: int | None = None, limit: int = 200) -> list[dict]:
        if experiment_id is None:
            return self.query("SELECT * FROM events ORDER BY id DESC LIMIT ?", [limit])
        return self.query("SELECT * FROM events WHERE experiment_id = ? ORDER BY id DESC LIMIT ?", [experiment_id, limit])


def _claim(parent: Path, stem: str, suffix: str, create) -> Path:
    """A new file or folder under ``parent``, created here (``create`` fails when the name exists), so it
    cannot be one another database left behind: ``<stem><suffix>``, or ``<stem>-<random><suffix>`` when taken."""
    parent.mkdir(parents=True, exist_ok=True)
    name = f"{stem}{suffix}"
    while True:
        try:
            create(parent / name)
            return parent / name
        except FileExistsError:
            name = f"{stem}-{secrets.token_hex(3)}{suffix}"


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
