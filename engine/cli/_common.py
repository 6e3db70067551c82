"""What the commands share: the parser that fails in one line, the argument types, the plain-text table,
the dataset a command line names, where text output goes, and Ctrl-C handling."""

from __future__ import annotations

import argparse
import math
import re
import signal
import sys
import threading
from pathlib import Path
from typing import NoReturn

from engine.core.errors import InputError
from engine.core.files import check_output_file, write_atomic
from engine.store import default_db_path

# Stopped by Ctrl-C, as shells expect (128 + SIGINT): `train ... && export-model ...` stops there too.
EXIT_INTERRUPTED = 130


class CliError(InputError):
    """A bad argument or input that the command line itself finds: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (a ``CliError``), without the usage dump."""

    def error(self, message: str) -> NoReturn:
        raise CliError(message)


MAX_ID = 2**63 - 1  # ids of experiments, runs and jobs are SQLite integers


def whole(low: int, high: int):
    """An argument type: a whole number from ``low`` to ``high``, refused with the range it takes. Every count
    has an upper bound: a typo of a few digits too many is refused, not run until killed."""
    span = f"from {low:,} to {high:,}"

    def parse(text: str) -> int:
        value = int(text) if re.fullmatch(r"\s*[-+]?\d{1,19}\s*", text) else None
        if value is None or value < low or value > high:
            raise argparse.ArgumentTypeError(f"expected a whole number {span}, got {text[:40]!r}")
        return value

    parse.__name__ = "whole number"
    parse.bounds = (low, high)  # what the property tests draw numbers outside of
    return parse


def number(low: float, high: float, *, above: bool = False, below: bool = False):
    """An argument type: a finite number from ``low`` (above it with ``above``) to ``high`` (below it with
    ``below``)."""
    lower = f"above {low:g} and" if above else f"from {low:g} to"
    bound = f"{lower} {'below ' if below else 'at most ' if above else ''}{high:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if (
            not math.isfinite(value)
            or value < low
            or (above and value == low)
            or value > high
            or (below and value == high)
        ):
            raise argparse.ArgumentTypeError(f"expected a finite number {bound}, got {text[:40]!r}")
        return value

    parse.__name__ = "number"
    parse.bounds = (low, high)
    return parse


def output_file(text: str) -> Path:
    """An argument type: a file to write. ``out/`` names a folder, which ``Path`` would quietly turn into the
    file ``out``, so a trailing slash is refused here, while the text still has it."""
    if text.endswith("/"):
        raise argparse.ArgumentTypeError(f"{text[:60]!r} ends with '/', which names a folder; name a file to write")
    return Path(text)


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(row[column])) for row in [header, *rows]) for column in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(
            str(value).rjust(width) if column else str(value).ljust(width)
            for column, (value, width) in enumerate(zip(row, widths))
        )

    return "\n".join([line(header), line(["-" * width for width in widths]), *map(line, rows)])


def one_line(error: BaseException) -> str:
    """An error's message on one line (its class name when it has none)."""
    return " ".join(str(error).split()) or type(error).__name__


def named_dataset(spec: str):
    """A dataset this command line names: a ``folder:`` path on it may lie outside the data roots (it is
    read because it was typed here, and we say so); nothing under it may lead elsewhere."""
    from engine.data import outside_roots
    from engine.data.images import load_dataset

    where = outside_roots(spec)
    data = load_dataset(spec, named_path=True)
    if where is not None:
        print(f"note: read {where}, outside the data roots, because this command line names it", file=sys.stderr)
    return data


def check_output(out: Path, args: argparse.Namespace, *inputs: Path) -> Path:
    """A command's output file under the one output rule (``check_output_file``): never a device, FIFO or
    folder, and never one of its inputs, among which the experiment database every command may read."""
    return check_output_file(out, inputs=[getattr(args, "db", None) or default_db_path(), *inputs])


def print_or_write(text: str, out: Path | None) -> None:
    """``text`` on standard output, or written to ``out`` (checked with ``check_output_file`` before the work)."""
    if out is None:
        sys.stdout.write(text)
        return
    write_atomic(out, text)
    print(f"wrote {out}")


class StopOnInterrupt:
    """First Ctrl-C asks the work to stop at the next safe point; a second one aborts at once."""

    def __init__(self) -> None:
        self.event = threading.Event()  # the work may set it too (a worker that ran out of jobs)
        self.interrupted = False  # Ctrl-C was pressed

    def __enter__(self) -> StopOnInterrupt:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, *_):
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        self.event.set()
        print("\nstopping after the current step (Ctrl-C again to abort)...", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def __call__(self) -> bool:
        return self.event.is_set()
