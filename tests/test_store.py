"""The experiment store and API on real SQLite files: validation, atomic claims, cancel/retry, fencing,
schema versions, export. (Worker processes and crash recovery: test_worker.py.)"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import time

import pytest
from helpers import cli, one_line_error

from engine import api
from engine.store import APPLICATION_ID, SCHEMA_VERSION, JobLost, Store, StoreError


def config(studio, **changes) -> api.ExperimentConfig:
    base = dict(
        dataset=studio["dataset"],
        kernel_sets=("1x1_3x3", "3x3_5x5"),
        iterations=4,
        epochs=1,
        device="cpu",
        baseline=None,
    )
    return api.ExperimentConfig(**{**base, **changes})


def counts(store: Store) -> dict[str, int]:
    return {t: store.db[t].count for t in ("experiments", "runs", "jobs", "candidates", "epochs")}


@pytest.fixture
def store(tmp_path, studio):
    return Store(tmp_path / "s.db")


def test_new_database_is_wal_with_the_current_schema(store):
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_a_database_from_a_newer_release_is_refused(tmp_path):
    path = tmp_path / "new.db"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer SpiKernel Studio"):
        Store(path)


def test_reopening_keeps_everything(tmp_path, studio):
    path = tmp_path / "s.db"
    ids = api.submit_experiment(config(studio), store=Store(path))
    again = Store(path)
    assert again.experiment(ids["experiment_id"])["config"]["iterations"] == 4
    assert [r["setting"] for r in again.runs()] == ["1x1_3x3_4x", "3x3_5x5_4x"]


def test_submit_validates_everything_and_writes_nothing_when_invalid(store, studio):
    bad = config(
        studio,
        dataset="folder:/etc",
        kernel_sets=("4x4_6x6",),
        iterations=0,
        epochs=0,
        seed=-1,
        profile="huge",
        precision="fp8",
        budget="lots",
        validation=1.0,
    )
    with pytest.raises(api.ConfigError) as e:
        api.submit_experiment(bad, store=store)
    errors = e.value.errors
    assert set(errors) == {
        "dataset",
        "kernel_sets",
        "iterations",
        "epochs",
        "seed",
        "profile",
        "precision",
        "budget",
        "validation",
    }
    assert "from 0 (none) to below 1" in errors["validation"]
    assert "outside the allowed data roots" in errors["dataset"]
    assert "odd kernel sizes" in errors["kernel_sets"]
    assert counts(store) == dict.fromkeys(counts(store), 0)
    with pytest.raises(api.ConfigError, match="device"):
        api.submit_experiment(config(studio, device="tpu"), store=store)
    with pytest.raises(api.ConfigError, match="pick at least one kernel set"):
        api.submit_experiment(config(studio, kernel_sets=()), store=store)
    assert store.db["experiments"].count == 0


def test_folder_datasets_must_stay_inside_the_data_roots(studio, tmp_path):
    outside = tmp_path / "outside"
    (outside / "train" / "a").mkdir(parents=True)
    (outside / "test" / "a").mkdir(parents=True)
    link = studio["root"] / "escape"
    link.symlink_to(outside)
    try:
        for spec in (f"folder:{outside}", "folder:../outside", "folder:escape"):
            ok, message = api.dataset_status(spec)
            assert not ok and "outside the allowed data roots" in message, spec
        assert api.dataset_status(studio["dataset"]) == (True, "on disk")
        assert api.dataset_status("sample") == (True, "bundled")
    finally:
        link.unlink()


def test_submit_records_runs_baseline_first_and_queues_one_job_each(store, studio):
    ids = api.submit_experiment(config(studio, baseline="1x1_3x3_8x", name="x'); DROP TABLE runs; --"), store=store)
    runs = api.runs_frame([ids["experiment_id"]], store=store)
    assert list(runs["setting"]) == ["1x1_3x3_8x", "1x1_3x3_4x", "3x3_5x5_4x"]
    assert list(runs["is_baseline"]) == [True, False, False]
    assert set(runs["status"]) == {"queued"}
    assert runs["experiment"].iloc[0] == "x'); DROP TABLE runs; --"  # bound, never formatted into SQL
    assert list(api.list_experiments(store=store)["status"]) == ["queued"]


def _claim_all(path: str, worker: str, out) -> None:
    store = Store(path)
    claimed = []
    while (lease := store.claim(worker, "cpu", stale_after=3600)) is not None:
        claimed.append(lease.job_id)
    out.put(claimed)


def test_concurrent_claims_from_processes_take_each_job_exactly_once(store, studio):
    for _ in range(10):
        api.submit_experiment(config(studio), store=store)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    workers = [ctx.Process(target=_claim_all, args=(str(store.path), f"host:{i}", out)) for i in range(4)]
    for w in workers:
        w.start()
    claimed = [job for _ in workers for job in out.get(timeout=60)]
    for w in workers:
        w.join()
    assert sorted(claimed) == sorted(j["id"] for j in store.jobs())
    assert all(j["attempts"] == 1 and j["status"] == "running" for j in store.jobs())


def test_cancel_and_retry(store, studio):
    ids = api.submit_experiment(config(studio), store=store)
    lease = store.claim("host:1", "cpu", stale_after=60)
    assert api.cancel(ids["experiment_id"], store=store) == 2
    jobs = {j["id"]: j for j in store.jobs()}
    queued = next(j for j in ids["job_ids"] if j != lease.job_id)
    assert jobs[queued]["status"] == "cancelled"  # at once
    assert jobs[lease.job_id]["status"] == "running" and jobs[lease.job_id]["cancel_requested"] == 1
    assert store.heartbeat(lease, {"stage": "search", "done": 1, "total": 4}) is True  # the worker learns of it
    store.end_job(lease, "cancelled")
    assert api.retry(ids["experiment_id"], store=store) == 2
    assert {j["status"] for j in store.jobs()} == {"queued"}
    assert {j["cancel_requested"] for j in store.jobs()} == {0}
    messages = " | ".join(api.events_frame(ids["experiment_id"], store=store)["message"])
    assert "cancel requested" in messages and "queued again" in messages


def test_a_job_ends_only_as_failed_or_cancelled_and_has_no_model_file_before(store, studio):
    api.submit_experiment(config(studio, kernel_sets=("1x1_3x3",)), store=store)
    lease = store.claim("host:1", "cpu", stale_after=60)
    for status in ("done", "queued", "running", None):
        with pytest.raises(ValueError, match="a job ends as failed or cancelled"):
            store.end_job(lease, status)
    assert store.job(lease.job_id)["status"] == "running"  # nothing changed
    with pytest.raises(StoreError, match="has no trained model yet"):
        api.checkpoint_path(lease.run_id, store=store)


def test_a_stale_job_is_taken_over_and_the_old_worker_cannot_write(store, studio):
    api.submit_experiment(config(studio, kernel_sets=("1x1_3x3",)), store=store)
    old = store.claim("host:1", "cpu", stale_after=60)
    assert store.claim("host:2", "cpu", stale_after=60) is None  # its heartbeat is fresh
    time.sleep(0.05)
    new = store.claim("host:2", "cpu", stale_after=0.01)
    assert new.job_id == old.job_id and new.attempt == old.attempt + 1
    row = {
        "index": 0,
        "genotype": "0302 0030 0003 0000",
        "score": 1.0,
        "params": 1,
        "params_torch": 1,
        "conv_edges": 3,
        "silent_layers": 0,
        "firing_rate": 0.1,
        "seconds": 0.1,
    }
    with pytest.raises(JobLost, match=rf"job {old.job_id} is no longer this worker's \(now re-claimed\)"):
        store.add_candidates(old, [row], 1.0)
    store.add_candidates(new, [row], 1.0)
    assert store.run(new.run_id)["candidates_done"] == 1


def test_orphans_of_a_dead_local_worker_go_back_to_the_queue(store, studio):
    api.submit_experiment(config(studio), store=store)
    store.claim("thishost:111", "cpu", stale_after=60)
    store.claim("otherhost:5", "cpu", stale_after=60)
    assert store.requeue_orphans("thishost", alive="thishost:222") == 1
    assert sorted(j["status"] for j in store.jobs()) == ["queued", "running"]


def test_delete_refuses_running_work_then_removes_rows_and_files(store, studio):
    ids = api.submit_experiment(config(studio), store=store)
    lease = store.claim("host:1", "cpu", stale_after=60)
    folder = store.experiment_folder(ids["experiment_id"])
    assert folder.is_dir()  # the database created it at submit
    with pytest.raises(StoreError, match="cancel it first"):
        api.delete_experiment(ids["experiment_id"], store=store)
    store.end_job(lease, "failed", "RuntimeError: boom")
    api.delete_experiment(ids["experiment_id"], store=store)
    assert counts(store) == dict.fromkeys(counts(store), 0)
    assert not folder.exists()


def test_export_labels_the_profile(store, studio):
    ids = api.submit_experiment(config(studio), store=store)
    csv = api.export_experiment(ids["experiment_id"], "csv", store=store)
    header, first = csv.splitlines()[:2]
    assert "profile" in header and "reduced" in header and "laptop" in first and "True" in first
    payload = json.loads(api.export_experiment(ids["experiment_id"], "json", store=store))
    assert payload["reduced_profile"] is True and len(payload["runs"]) == 2
    with pytest.raises(ValueError, match="csv, json"):
        api.export_experiment(ids["experiment_id"], "xml", store=store)


def test_an_emptied_database_is_refused_and_new_experiments_never_adopt_old_files(tmp_path, studio):
    path = tmp_path / "s.db"
    store = Store(path)
    old = api.submit_experiment(config(studio), store=store)
    old_folder = store.experiment_folder(old["experiment_id"])
    (old_folder / "1x1_3x3_4x").mkdir()
    (old_folder / "1x1_3x3_4x" / "train-state.pt").write_bytes(b"old weights")
    old_log = store.claim_log(old["job_ids"][0])
    old_log.write_text("old log\n")
    store.close()
    path.write_bytes(b"")  # emptied (a failed copy, a truncation)
    with pytest.raises(StoreError, match="is empty \\(0 bytes\\).*left untouched"):
        Store(path)
    assert path.stat().st_size == 0

    path.unlink()  # removed by hand: a new database starts at id 1 beside the old files
    fresh = Store(path)
    new = api.submit_experiment(config(studio), store=fresh)
    assert new["experiment_id"] == old["experiment_id"]
    folder = fresh.experiment_folder(new["experiment_id"])
    assert folder != old_folder and folder.is_dir() and not any(folder.iterdir())
    log = fresh.claim_log(new["job_ids"][0])
    assert log != old_log and log.read_text() == "" and old_log.read_text() == "old log\n"
    assert fresh.claim_log(new["job_ids"][0]) == log  # recorded: later attempts append to the same file
    assert fresh.run_folder(new["experiment_id"], "1x1_3x3_4x") == folder / "1x1_3x3_4x"


def test_two_databases_in_one_folder_keep_their_files_apart(tmp_path, studio):
    a, b = Store(tmp_path / "a.db"), Store(tmp_path / "b.db")
    ids_a, ids_b = api.submit_experiment(config(studio), store=a), api.submit_experiment(config(studio), store=b)
    assert a.experiment_folder(ids_a["experiment_id"]) != b.experiment_folder(ids_b["experiment_id"])
    assert a.claim_log(ids_a["job_ids"][0]) != b.claim_log(ids_b["job_ids"][0])


def test_only_this_projects_databases_are_opened(tmp_path, studio):
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    before = foreign.read_bytes()
    for readonly in (False, True):
        with pytest.raises(StoreError, match="another application's SQLite database"):
            Store(foreign, readonly=readonly)
    assert foreign.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]

    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    before = damaged.read_bytes()
    for readonly in (False, True):
        with pytest.raises(
            StoreError, match=r"damaged\.db is not a readable SQLite database \(.+\); it was left untouched$"
        ) as e:
            Store(damaged, readonly=readonly)
        assert "\n" not in str(e.value)
    one_line_error(cli("--db", str(damaged), "jobs"), r"damaged\.db is not a readable SQLite database .*left untouched")
    assert damaged.read_bytes() == before  # left untouched: not repaired, not recreated, nothing beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.db", "other.db"]
    with pytest.raises(StoreError, match="is a folder"):
        Store(tmp_path)
    with pytest.raises(StoreError, match="folder .*typo does not exist"):
        Store(tmp_path / "typo" / "s.db")
    with pytest.raises(StoreError, match="no experiment database"):
        Store(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "typo").exists() and not (tmp_path / "missing.db").exists()

    mine = Store(tmp_path / "s.db")
    assert mine.db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_a_database_of_the_first_release_is_recognised_and_migrated(tmp_path, studio):
    from engine.store import MIGRATIONS

    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as conn:  # as release 1 wrote it: no application id, schema 1
        conn.executescript(MIGRATIONS[0])
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO experiments (name, config, dataset, profile, reduced, created) "
            "VALUES ('old', '{}', 'sample', 'laptop', 1, 0)"
        )
    before = path.read_bytes()
    assert Store(path, readonly=True).experiments()[0]["name"] == "old"
    assert path.read_bytes() == before  # read-only: not even migrated
    store = Store(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.experiment_folder(1) == tmp_path / "experiments" / "1"


def test_a_trained_run_records_its_validation_accuracy_per_epoch_and_at_the_end(store, studio):
    """What the worker writes for a training that held out validation images: each epoch's validation accuracy
    beside its test accuracy, and the run's last one, which Alg. 1 then chooses on."""
    ids = api.submit_experiment(config(studio, validation=0.2), store=store)
    assert api.get_experiment(ids["experiment_id"], store=store)["config"]["validation"] == 0.2
    lease = store.claim("host:1", "cpu", stale_after=60)
    store.finish_search(lease, {"genotype": "0302 0030 0003 0000", "score": 1.0}, 1000, 1100, 1.0)
    record = {"epoch": 1, "train_loss": 0.7, "train_accuracy": 0.5, "test_accuracy": 0.6, "firing_rate": 0.1}
    store.add_epoch(lease, {**record, "seconds": 1.0, "lr": 0.1, "val_accuracy": 0.65})
    store.finish_run(lease, {"accuracy": 0.6, "val_accuracy": 0.65})
    epochs = api.epochs_frame([ids["experiment_id"]], store=store)
    assert list(epochs["val_accuracy"]) == [0.65] and list(epochs["test_accuracy"]) == [0.6]
    run = api.runs_frame([ids["experiment_id"]], store=store).set_index("run_id").loc[lease.run_id]
    assert (run["accuracy"], run["val_accuracy"]) == (0.6, 0.65)
    assert api.trained_models(api.runs_frame([ids["experiment_id"]], store=store))[0].validation == 0.65


def test_a_database_before_validation_splits_gains_the_epochs_column_and_reads_without_it(tmp_path, studio):
    from engine.store import MIGRATIONS

    path = tmp_path / "v6.db"
    with sqlite3.connect(path) as conn:  # as the release before validation splits wrote it: schema 6
        conn.executescript("".join(MIGRATIONS[:6]))
        conn.execute(
            "INSERT INTO experiments (name, config, dataset, profile, reduced, created, folder) "
            "VALUES ('old', '{}', 'sample', 'laptop', 1, 0, 'experiments/1')"
        )
        conn.execute(
            "INSERT INTO runs (experiment_id, position, setting, kernel_set, iterations) "
            "VALUES (1, 0, 'a', '1x1_3x3', 3)"
        )
        conn.execute("INSERT INTO jobs (run_id, created) VALUES (1, 0)")
        conn.execute("INSERT INTO epochs VALUES (1, 1, 0.7, 0.5, 0.6, 0.1, 1.0, 0.1)")
        conn.execute("PRAGMA user_version = 6")
    old = api.epochs_frame([1], store=Store(path, readonly=True))  # read as it is: no such column
    assert list(old["test_accuracy"]) == [0.6] and old["val_accuracy"].isna().all()
    store = Store(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert [r["val_accuracy"] for r in store.epochs([1])] == [None]


def test_a_read_only_open_creates_and_changes_nothing(tmp_path, studio):
    path = tmp_path / "s.db"
    api.submit_experiment(config(studio), store=Store(path))
    Store(path).close()
    import gc

    gc.collect()
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    reader = Store(path, readonly=True)
    assert len(reader.jobs()) == 2
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.log("no")
    reader.close()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == files


@pytest.mark.parametrize(
    "field, value",
    [
        ("name", 7),
        ("name", None),
        ("dataset", 3.5),
        ("dataset", "folder:" + "x" * 300),
        ("dataset", "folder:a\x00b"),
        ("kernel_sets", 5),
        ("kernel_sets", (3, 5)),
        ("kernel_sets", None),
        ("profile", ["laptop"]),
        ("device", 0),
        ("precision", {}),
        ("budget", ["10M"]),
        ("bits", 8),
        ("seed", 2**70),
        ("baseline", 1_3),
        ("iterations", "9"),
    ],
)
def test_any_value_of_any_field_is_a_field_error(store, studio, field, value):
    raw = {
        "dataset": studio["dataset"],
        "kernel_sets": ["1x1_3x3"],
        "iterations": 3,
        "epochs": 1,
        "device": "cpu",
        field: value,
    }
    with pytest.raises(api.ConfigError) as e:
        api.submit_experiment(raw, store=store)
    assert field in e.value.errors
    assert counts(store)["experiments"] == 0


def test_time_estimate_uses_the_pace_of_finished_runs_on_the_same_kind_of_device(finished, studio, tmp_path):
    copy = tmp_path / "copy.db"
    with sqlite3.connect(studio["db"]) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    store = Store(copy)
    runs = api.runs_frame([finished["experiment_id"]], store=store)
    per_candidate = runs.search_seconds.sum() / runs.candidates_done.sum()
    per_epoch = runs.train_seconds.sum() / runs.epochs_done.sum()
    planned = api.ExperimentConfig(
        dataset=studio["dataset"], kernel_sets=("3x3_5x5",), iterations=50, epochs=4, device="cpu", baseline=None
    )
    assert api.estimate_seconds(planned, store=store) == pytest.approx(50 * per_candidate + 4 * per_epoch)

    store.db.execute("UPDATE jobs SET device = 'cuda:0'")  # the same history, measured on a GPU
    store.db.conn.commit()
    per_candidate, per_image = api.PACE_DEFAULTS["laptop", "cpu"]
    expected = 50 * per_candidate + 4 * per_image * api.TRAIN_IMAGES.get("folder", 10_000)
    assert api.estimate_seconds(planned, store=store) == pytest.approx(expected)


@pytest.mark.parametrize(("profile", "epochs"), [("laptop", 10), ("paper", 300)])
def test_unset_epochs_come_from_the_profile(store, studio, profile, epochs):
    ids = api.submit_experiment(config(studio, profile=profile, epochs=None), store=store)
    assert api.get_experiment(ids["experiment_id"], store=store)["config"]["epochs"] == epochs
    explicit = api.submit_experiment(config(studio, profile=profile, epochs=3), store=store)
    assert api.get_experiment(explicit["experiment_id"], store=store)["config"]["epochs"] == 3
