"""Writing files so that a kill at any instant leaves either the old file or the new one, never half."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from engine.core.errors import InputError


class OutputError(InputError):
    """An output path that cannot be written; found before any work starts."""


def check_output_file(path: Path | str) -> Path:
    """``path`` if a file can be written there: not a folder, under folders that exist or can be made,
    writable. Creates nothing: commands check their outputs before any work, and write them after."""
    path = Path(path)
    _check_name(path)
    try:
        if path.is_dir():
            raise OutputError(f"{path} is a folder; name a file to write")
    except (OSError, ValueError) as e:  # a name too long, a NUL byte
        raise OutputError(f"cannot write {str(path)!r}: {getattr(e, 'strerror', None) or e}") from None
    _check_folder(path.parent)
    return path


def check_output_folder(path: Path | str) -> Path:
    """``path`` if it is a folder, or can be made one, where files can be written. Creates nothing."""
    path = Path(path)
    _check_folder(path)
    return path


NAME_MAX, PATH_MAX = 255, 4096  # bytes of one name, and of a whole path, that filesystems take


def _check_name(path: Path) -> None:
    if "\x00" in str(path):
        raise OutputError(f"cannot write {str(path)[:100]!r}: a path cannot hold a NUL character")
    encoded = os.fsencode(path)
    if len(encoded) > PATH_MAX or any(len(part) > NAME_MAX for part in encoded.split(b"/")):
        raise OutputError(f"cannot write {str(path)[:100]!r}...: a name in it is too long")


def _check_folder(folder: Path) -> None:
    _check_name(folder)
    try:
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise OutputError(f"cannot write under {folder}: {existing} is a file, not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write in {existing}: permission denied")
    except OutputError:
        raise
    except (OSError, ValueError) as e:
        raise OutputError(f"cannot write under {str(folder)!r}: {getattr(e, 'strerror', None) or e}") from None


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` for a writer to fill (any library's ``save(..., tmp)``); when the
    block ends it is flushed to disk and renamed over ``path``. On any failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through ``atomic_path``: all of it or, after a crash, the old file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def write_json(path: Path, payload) -> None:
    write_atomic(path, json.dumps(payload, indent=1) + "\n")
