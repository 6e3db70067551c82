"""The one family of errors a user meets: each says what is wrong and what to do, in one line.

Everything the engine raises for a reason the user can act on derives from ``SpikernelError``; the command
line prints exactly those as one line (exit code ``exit_code``) and lets anything else surface as the bug it
is, with its traceback. The bases keep the standard library's meaning too (``InputError`` is a
``ValueError``), so ``except ValueError`` around a parse still works.
"""

from __future__ import annotations


class SpikernelError(Exception):
    """A failure the user can act on; the message is the whole story."""

    exit_code = 2


class InputError(SpikernelError, ValueError):
    """Bad input: an argument, a file, a configuration or a dataset that cannot be used as given."""


class WorkFailed(SpikernelError, RuntimeError):
    """Work that started and could not finish for a reason the message names (training diverged, ...)."""

    exit_code = 1
