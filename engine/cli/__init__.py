"""Command line: ``python -m engine <command> ...`` (``python -m engine -h`` lists the commands).

One module per command, or per few commands that belong together, each with its ``add_parser`` (the
arguments, next to what they run) and its ``run`` function(s); ``_arguments`` holds the arguments several
commands share, ``_common`` the rest they share. Modules that need torch are imported inside ``run``: the
commands that only read or queue never load it.
"""

from __future__ import annotations

import sqlite3
import sys

from engine.cli import (
    benchmark,
    evaluate,
    explore,
    export_model,
    jobs,
    profile,
    search,
    study,
    submit,
    train,
    worker,
)
from engine.cli._arguments import add_db
from engine.cli._common import EXIT_INTERRUPTED, Parser, one_line
from engine.core.errors import SpikernelError

__all__ = ["main", "build_parser"]

# In the order ``python -m engine -h`` lists them.
COMMANDS = (search, profile, train, evaluate, explore, submit, study, jobs, export_model, benchmark, worker)

EXIT_FAILED = 1  # a disk, permission or database problem met during the work


def build_parser() -> Parser:
    parser = Parser(prog="python -m engine", description="SpiKernel: kernel-size exploration for spiking networks")
    add_db(parser)
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code. An error the user can act on (``SpikernelError``, bad arguments
    included) is one line on standard error; anything else is a bug and surfaces with its traceback."""
    try:
        args = build_parser().parse_args(argv)
        code = args.run_command(args)  # a command stopped by Ctrl-C says so and returns EXIT_INTERRUPTED
    except SpikernelError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return error.exit_code
    except (OSError, sqlite3.Error) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
