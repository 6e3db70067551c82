"""The experiment database the API works on: one open ``Store`` per file and mode, shared by the calls."""

from __future__ import annotations

from pathlib import Path

from engine.store import Store, StoreError, default_db_path

_STORES: dict[tuple[Path, bool], Store] = {}


def get_store(path: str | Path | None = None, *, create: bool = True, readonly: bool = False) -> Store:
    """The store at ``path`` (default ``default_db_path()``), opened once per process.

    ``create``: a new database may be made where there is none (in an existing folder; the default
    database's folder is made when missing). ``readonly``: nothing is created or changed, not even the schema.
    """
    if path is None:
        path = default_db_path()
        if create and not readonly:
            path.parent.mkdir(parents=True, exist_ok=True)
    try:
        key = (Path(path).expanduser().resolve(), readonly)
    except (OSError, ValueError) as e:
        raise StoreError(f"{str(path)!r} is not a usable database path: {e}") from None
    if key not in _STORES:
        _STORES[key] = Store(key[0], create=create, readonly=readonly)
    return _STORES[key]


def _store(store: Store | str | Path | None) -> Store:
    return store if isinstance(store, Store) else get_store(store)
