"""The database itself: its file (only this project's is opened), one connection per thread, the schema and
its migrations, the write transaction, reads, the files beside it and the events log."""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from engine.core.errors import SpikernelError
from engine.core.paths import default_data_root

DB_ENV = "SPIKERNEL_DB"
BUSY_TIMEOUT_S = 30.0
# SQLite's application_id of this project's databases ("SpKr"): another application's file is refused.
APPLICATION_ID = 0x53704B72
TABLES = frozenset({"experiments", "runs", "candidates", "epochs", "jobs", "events"})  # every version has them


class StoreError(SpikernelError, RuntimeError):
    """The database cannot be used as asked (newer schema, unknown id, a forbidden change)."""


def default_db_path() -> Path:
    """``$SPIKERNEL_DB`` if set, else ``spikernel.db`` in the data root."""
    env = os.environ.get(DB_ENV)
    return Path(env).expanduser() if env else default_data_root() / "spikernel.db"


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

# What the worker measures after training (engine.deploy.nir): test accuracy with 8- and 4-bit weights,
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

# A study (engine.study.studies) is an experiment of its own kind whose runs also train a stratified subset of their
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

# A run whose accuracy is looked up in a benchmark (SpikeNAS-Bench) instead of trained has a validation
# accuracy beside its test accuracy: the one chosen on, the other reported.
_V5 = """
ALTER TABLE runs ADD COLUMN val_accuracy REAL;
"""

# A study's correlation sample is a uniform draw of distinct cells, which may include a top-scored cell: ``sampled``
# marks the rows that belong to it (a study of an earlier release sampled its 'random' cells). Trainings hold out
# a validation part of the training set: ``val_accuracy`` is what a study chooses on, ``accuracy`` what it reports.
_V6 = """
ALTER TABLE trained_cells ADD COLUMN sampled INTEGER NOT NULL DEFAULT 0 CHECK (sampled IN (0, 1));
ALTER TABLE trained_cells ADD COLUMN val_accuracy REAL;
UPDATE trained_cells SET sampled = 1 WHERE role = 'random';
"""

# A training holds out a validation part of its training images: each evaluated epoch records the accuracy on it
# beside the test accuracy (runs.val_accuracy, from _V5, holds a trained run's last one).
_V7 = """
ALTER TABLE epochs ADD COLUMN val_accuracy REAL;
"""

# Each entry upgrades the schema by one version; a database remembers its version in user_version.
# Append, never edit: a newer release opens an older database by running the entries it lacks.
MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7)
SCHEMA_VERSION = len(MIGRATIONS)


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
        raise _refuse(
            path,
            "is empty (0 bytes), not an experiment database; restore it, or move it away together "
            "with the experiments/ and logs/ folders beside it to start a new one",
        )
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


def create_new(parent: Path, stem: str, suffix: str, create) -> Path:
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


class Database:
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

    # --- events: the log a user reads, written in the same transaction as what it reports

    def log(
        self, message: str, *, level: str = "info", experiment_id: int | None = None, run_id: int | None = None
    ) -> None:
        with self.write() as db:
            db["events"].insert(
                {
                    "time": time.time(),
                    "experiment_id": experiment_id,
                    "run_id": run_id,
                    "level": level,
                    "message": message,
                }
            )

    def events(self, experiment_id: int | None = None, limit: int = 200) -> list[dict]:
        if experiment_id is None:
            return self.query("SELECT * FROM events ORDER BY id DESC LIMIT ?", [limit])
        return self.query(
            "SELECT * FROM events WHERE experiment_id = ? ORDER BY id DESC LIMIT ?", [experiment_id, limit]
        )
