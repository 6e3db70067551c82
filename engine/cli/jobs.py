"""The experiment database's queue (no torch): ``jobs`` lists it, ``cancel`` and ``retry`` change it,
``export`` writes an experiment's results."""

from __future__ import annotations

import argparse

from engine import api
from engine.cli import _arguments
from engine.cli._common import MAX_ID, CliError, check_output, print_or_write, table, whole


def add_parser(subparsers) -> None:
    jobs = subparsers.add_parser("jobs", help="every job with its status and progress")
    jobs.add_argument("--experiment", type=whole(1, MAX_ID))
    jobs.set_defaults(run_command=run_jobs)

    cancel = subparsers.add_parser("cancel", help="cancel queued and running jobs")
    add_job_target(cancel)
    cancel.set_defaults(run_command=run_cancel)

    retry = subparsers.add_parser("retry", help="queue failed or cancelled jobs again (they resume)")
    add_job_target(retry)
    retry.set_defaults(run_command=run_retry)

    export = subparsers.add_parser("export", help="an experiment's results as CSV (table) or JSON (everything)")
    export.add_argument("experiment", type=whole(1, MAX_ID))
    export.add_argument("--format", choices=["csv", "json"], default="csv")
    _arguments.add_output_file(export)
    export.set_defaults(run_command=run_export)


def add_job_target(parser: argparse.ArgumentParser) -> None:
    """The jobs ``cancel`` and ``retry`` act on: ids, or every job of an experiment (``job_target``)."""
    parser.add_argument("job", type=whole(1, MAX_ID), nargs="*", help="job ids")
    parser.add_argument("--experiment", type=whole(1, MAX_ID), help="all jobs of this experiment")


def job_target(args: argparse.Namespace) -> dict:
    if (args.experiment is None) == (not args.job):
        raise CliError("name either an experiment (--experiment N) or job ids")
    return {"experiment_id": args.experiment, "job_ids": args.job or None}


def run_jobs(args: argparse.Namespace) -> None:
    store = api.get_store(args.db, create=False, readonly=True)
    jobs = api.jobs_frame(args.experiment, store=store)
    worker = api.worker_status(store=store)
    running = f"running (pid {worker['pid']} on {worker['host']})" if worker["running"] else "not running"
    print(f"worker: {running}")
    if jobs.empty:
        print("no jobs yet: submit one with `python -m engine submit`")
        return
    jobs = jobs.astype(object).where(jobs.notna(), None)  # a missing stage or note is empty, never 'nan'
    rows = []
    for job in jobs.itertuples():
        if job.status == "done":  # its last heartbeat may predate its last step: the job itself is complete
            progress = f"{job.total}/{job.total}" if job.total else "complete"
        else:
            progress = f"{job.done}/{job.total}" if job.stage else ""
        detail = job.error if job.status == "failed" else (job.note or "")
        rows.append(
            [str(job.id), str(job.experiment_id), job.setting, job.status, job.stage or "", progress, detail[:70]]
        )
    print(table(rows, ["job", "exp", "setting", "status", "stage", "progress", "detail"]))


def run_cancel(args: argparse.Namespace) -> None:
    cancelled = api.cancel(**job_target(args), store=api.get_store(args.db, create=False))
    print(f"cancelled {cancelled} job(s)" if cancelled else "nothing to cancel: no queued or running job matched")


def run_retry(args: argparse.Namespace) -> None:
    queued = api.retry(**job_target(args), store=api.get_store(args.db, create=False))
    print(f"queued {queued} job(s) again" if queued else "nothing to retry: no failed or cancelled job matched")


def run_export(args: argparse.Namespace) -> None:
    if args.out is not None:
        check_output(args.out, args)
    store = api.get_store(args.db, create=False, readonly=True)
    print_or_write(api.export_experiment(args.experiment, args.format, store=store), args.out)
