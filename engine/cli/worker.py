"""``worker``: run the database's queued jobs in the foreground (here, or as Ray tasks on a cluster)."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading

from engine import api
from engine.cli._common import EXIT_INTERRUPTED, CliError, number


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("worker", help="run queued jobs (foreground); one job per GPU, else one on the CPU")
    parser.add_argument("--idle-exit", type=number(0, 10**7), help="exit after this many seconds without work")
    parser.add_argument(
        "--stale-after",
        type=number(0, 10**7, above=True),
        default=60.0,
        help="take over running jobs silent this long (s)",
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        type=ray_address,
        help="run jobs as Ray tasks: 'auto' (the cluster this machine joined), 'local' or a cluster address",
    )
    parser.set_defaults(run_command=run)


def ray_address(text: str) -> str:
    """``--ray``'s value, checked before Ray starts: 'auto', 'local' or a head node's host:port."""
    host, _, port = text.rpartition(":")
    if text in ("auto", "local") or (
        re.fullmatch(r"[^\s:]+|\[[0-9A-Fa-f:.]+\]", host)
        and re.fullmatch(r"\d{1,5}", port, re.ASCII)
        and int(port) <= 65535
    ):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, local or a head node's host:port, got {text[:40]!r}")


def run(args: argparse.Namespace) -> None:
    from engine.jobs.worker import WorkerBusy, serve

    store = api.get_store(args.db)
    if args.ray is not None:
        from engine.jobs.ray_driver import import_ray, serve_ray

        import_ray()  # one line of error when Ray is missing
    stop = threading.Event()

    def stopping(signal_number, _frame) -> None:  # Ctrl-C or SIGTERM: said once, while jobs reach their next step
        if stop.is_set() and signal_number == signal.SIGINT:
            # A second Ctrl-C aborts now, as a kill would: what the jobs recorded stays, and the next worker on
            # this machine takes them back at once (their process is gone) and resumes them from there. Not by
            # unwinding: the interpreter would stop under a training still running in a job's thread.
            sys.stdout.flush()
            print("interrupted", file=sys.stderr, flush=True)
            os._exit(EXIT_INTERRUPTED)
        if not stop.is_set():
            print(
                "stopping: running jobs go back to the queue at their next step (Ctrl-C again to abort now)",
                file=sys.stderr,
            )
        stop.set()

    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, stopping)
    try:
        if args.ray is not None:

            def ready(total: dict) -> None:  # said once the cluster has answered, not before
                size = f"{int(total.get('CPU', 0))} CPU, {int(total.get('GPU', 0))} GPU"
                where = f"Ray worker serving {store.path} on {args.ray} ({size})"
                print(f"{where} (Ctrl-C stops; running jobs resume later)", file=sys.stderr)

            serve_ray(
                store,
                address=args.ray,
                stale_after=args.stale_after,
                idle_exit=args.idle_exit,
                stop=stop,
                on_ready=ready,
            )
        else:
            serve(
                store,
                stale_after=args.stale_after,
                idle_exit=args.idle_exit,
                stop=stop,
                on_serving=lambda: print(
                    f"worker serving {store.path} (Ctrl-C stops; running jobs resume later)", file=sys.stderr
                ),
            )
    except WorkerBusy as busy:
        raise CliError(str(busy)) from None
