"""What the experiments recorded: experiments (and studies) with their folders, runs, scored candidates,
epochs, a study's trained cells, deployment measurements, and the pace of past runs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from engine.store.database import Database, StoreError, create_new
from engine.store.queue import JobStatus, Lease, own

CANDIDATE_COLUMNS = (
    "index",
    "genotype",
    "score",
    "params",
    "params_torch",
    "conv_edges",
    "silent_layers",
    "firing_rate",
    "seconds",
)
TRAINED_CELL_COLUMNS = (
    "genotype",
    "seed",
    "role",
    "candidate",
    "score",
    "conv_edges",
    "params",
    "accuracy",
    "train_accuracy",
    "firing_rate",
    "seconds",
    "sampled",
    "val_accuracy",
)
EPOCH_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "test_accuracy",
    "firing_rate",
    "seconds",
    "lr",
    "val_accuracy",
)


class Results(Database):
    """Experiments, their runs and what each run recorded; a job writes its run's results under its lease."""

    # --- folders beside the database

    def experiment_folder(self, experiment_id: int) -> Path:
        """The folder this database created for the experiment (``experiments/<id>`` unless that was taken)."""
        row = self._one("SELECT * FROM experiments WHERE id = ?", [experiment_id])
        if row is None:
            raise StoreError(f"there is no experiment {experiment_id}")
        return self.root / (row.get("folder") or f"experiments/{experiment_id}")

    def run_folder(self, experiment_id: int, setting: str) -> Path:
        return self.experiment_folder(experiment_id) / setting

    # --- experiments

    def add_experiment(
        self, name: str, config: dict, *, profile: str, reduced: bool, runs: list[dict], kind: str = "experiment"
    ) -> dict:
        """The experiment (or study), its runs and one queued job per run, in one transaction."""
        now = time.time()
        with self.write() as db:
            experiment_id = (
                db["experiments"]
                .insert(
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
                )
                .last_pk
            )
            folder = create_new(self.root / "experiments", str(experiment_id), "", Path.mkdir)
            try:
                db["experiments"].update(experiment_id, {"folder": str(folder.relative_to(self.root))})
                run_ids, job_ids = [], []
                for position, run in enumerate(runs):
                    row = {**run, "experiment_id": experiment_id, "position": position}
                    run_ids.append(db["runs"].insert(row).last_pk)
                    job_ids.append(
                        db["jobs"].insert({"run_id": run_ids[-1], "created": now, "total": run["iterations"]}).last_pk
                    )
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
                "SELECT count(*) FROM jobs j JOIN runs r ON r.id = j.run_id WHERE r.experiment_id = ? AND j.status = ?",
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
            job_id, run_id = own(db, lease)
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
            job_id, run_id = own(db, lease)
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
            job_id, run_id = own(db, lease)
            db["epochs"].insert({"run_id": run_id, **{c: record[c] for c in EPOCH_COLUMNS}}, replace=True)
            db.execute(
                "UPDATE runs SET epochs_done = (SELECT count(*) FROM epochs WHERE run_id = ?), "
                "train_seconds = (SELECT sum(seconds) FROM epochs WHERE run_id = ?) WHERE id = ?",
                [run_id, run_id, run_id],
            )

    def add_trained_cell(self, lease: Lease, row: dict) -> None:
        """One (cell, seed) of a study trained; the same again replaces it (a resumed study repeats it exactly)."""
        with self.write() as db:
            job_id, run_id = own(db, lease)
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
            job_id, run_id = own(db, lease)
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
