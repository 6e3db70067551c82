"""``submit``: queue an exploration in the experiment database for the worker (no torch)."""

from __future__ import annotations

import argparse

from engine import api
from engine.cli import _arguments


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("submit", help="queue an exploration in the experiment database for the worker")
    _arguments.add_experiment(parser)
    parser.add_argument("--name", default="")
    parser.add_argument("--start-worker", action="store_true", help="start a background worker unless one runs")
    parser.set_defaults(run_command=run)


def run(args: argparse.Namespace) -> None:
    config = _arguments.experiment_config(args)
    errors = api.validate(config)  # before the database is opened (or made)
    if errors:
        raise api.ConfigError(errors)
    store = api.get_store(args.db)
    ids = api.submit_experiment(config, store=store)
    job_ids = ids["job_ids"]
    print(f"experiment {ids['experiment_id']}: {len(job_ids)} job(s) queued ({', '.join(map(str, job_ids))})")
    if args.start_worker:
        pid = api.ensure_worker(store=store)
        print(f"started a worker (pid {pid})" if pid else "a worker is already running")
    elif not api.worker_status(store=store)["running"]:
        print("no worker is running: start one with `python -m engine worker`")
