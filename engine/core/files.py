"""Writing files so that a kill at any instant leaves either the old file or the new one, never half."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from engine.core.errors import InputError


class OutputError(InputError):
    """An output path that cannot be written; found before any work starts."""


def check_output_file(path: Path | str, inputs: Iterable[Path | str] = ()) -> Path:
    """``path`` if a file can be written there: absent, or a regular file that is none of the command's
    ``inputs`` (compared by resolved path and by device and inode, so symlinks and hard links count), under
    folders that exist or can be made, writable. A device, FIFO, socket or folder is never replaced. Creates
    nothing: commands check their outputs before any work, and write them after."""
    path = Path(path)
    _check_name(path)
    try:
        _check_replaceable(path)
        for source in inputs:
            if _same_file(path, Path(source)):
                raise OutputError(f"{path} is this command's input {source}; write the output elsewhere")
    except OutputError:
        raise
    except (OSError, ValueError) as e:  # a name too long, a NUL byte
        raise OutputError(f"cannot write {str(path)!r}: {getattr(e, 'strerror', None) or e}") from None
    _check_folder(path.parent)
    return path


def _check_replaceable(path: Path) -> None:
    """Refuses what is at ``path`` (a symlink's target counts) unless it is nothing or a regular file."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there (a dangling link, or under a file: the
        return  # folder check says which)
    if stat.S_ISDIR(mode):
        raise OutputError(f"{path} is a folder; name a file to write")
    if not stat.S_ISREG(mode):
        raise OutputError(f"{path} is not a regular file (a device, FIFO or socket); name a file to write")


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte: not a file either can be
        return False


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
    _check_replaceable(path)  # again at write time: something may have appeared there since the check
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
