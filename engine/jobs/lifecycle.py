"""One job's life in the store, shared by the local worker and the Ray driver: what a job needs to start or
resume (``run_spec``), where it reports (``StoreSink``: durable writes fenced by the job's lease, progress with
each heartbeat), its log file, and how its end is recorded (``conclude``: done, cancelled, queued again or
failed with ``Type: message``). ``worker.py`` runs jobs in its own process; ``ray_backend.py`` as Ray tasks.

No torch here: the model stack (``engine.jobs.execute``) is imported only where a job is prepared or concluded.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine.core.space import Setting, Space
from engine.store import JobLost, JobStatus, Lease, Store

if TYPE_CHECKING:
    from engine.jobs.execute import RunSpec

HEARTBEAT_S = 2.0  # progress reaches the store this often; a cancel is noticed within this


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
    from engine.jobs.execute import RunSpec  # the model stack: loaded where work runs, never by the dashboard

    run = store.run(lease.run_id)
    config = store.experiment(run["experiment_id"])["config"]
    best = None
    if run["stage"] != "search":
        best = {"genotype": run["best_genotype"], "score": run["best_score"]}
    study = config.get("study")  # a study's run needs its scored cells again to plan what it trains
    return RunSpec(
        setting=Setting(Space.parse(run["kernel_set"]), run["iterations"]),
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
        in_flight=config.get("in_flight", 1),
        study=study,
        trained=store.trained_cells([lease.run_id]) if study else [],
        epochs_done=run["epochs_done"] or 0,
        validation=config.get("validation", 0.0),  # an experiment submitted before validation splits had none
    )


class StoreSink:
    """Writes a local job's results straight to the store; progress goes out with each heartbeat."""

    def __init__(
        self,
        store: Store,
        lease: Lease,
        logger: logging.Logger,
        shutdown: threading.Event,
        on_progress: Callable | None = None,
    ) -> None:
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
        self.logger.info(
            "epoch %d: loss %.4f, test accuracy %s, validation accuracy %s",
            record["epoch"],
            record["train_loss"],
            record["test_accuracy"],
            record.get("val_accuracy"),
        )

    def trained_cell(self, row):
        self.store.add_trained_cell(self.lease, row)
        self.logger.info(
            "trained %s (%s, seed %d): test accuracy %.4f", row["genotype"], row["role"], row["seed"], row["accuracy"]
        )

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
    if spec.stage == "search" or spec.study is not None:
        recorded = f"{len(spec.done)} candidates recorded"
    else:  # a training run no longer carries its candidates: they stay in the store
        recorded = f"search finished, {spec.epochs_done} epoch(s) recorded"
    logger.info(
        "attempt %d on %s (%s%s): %s from stage %s, %s",
        lease.attempt,
        lease.worker,
        spec.device,
        where,
        spec.setting,
        spec.stage,
        recorded,
    )


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
        from engine.jobs.execute import CHECKPOINT_NAME

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
