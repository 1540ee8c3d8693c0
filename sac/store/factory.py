"""A store from its address: ``sqlite:PATH`` (or a bare path) or a PostgreSQL URI/DSN."""

from __future__ import annotations

from typing import Any

from sac.errors import ConfigurationError
from sac.keys import MasterKey
from sac.store.connector import Store

__all__ = ["is_postgres", "store_at"]


def store_at(address: str, master_key: MasterKey | None, **kw: Any) -> Store:
    """``sqlite:/var/lib/sac/sac.db``, ``sac.db``, ``postgresql://user@host/db`` or a libpq
    DSN (``host=... dbname=...``); the store is not opened yet."""
    address = address.strip()
    if not address:
        raise ConfigurationError("no store given (a SQLite path or a PostgreSQL DSN)")
    if is_postgres(address):
        from sac.store.postgres import PostgresStore

        return PostgresStore(address, master_key, **kw)
    from sac.store.sqlite import SQLiteStore

    path = address.removeprefix("sqlite://").removeprefix("sqlite:")
    return SQLiteStore(path, master_key, **kw)


def is_postgres(address: str) -> bool:
    """Whether ``address`` names a PostgreSQL database (else it is a SQLite file)."""
    return address.startswith(("postgresql://", "postgres://")) or "dbname=" in address
