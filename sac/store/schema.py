"""Versioned schema: numbered migration files per dialect, applied in one transaction."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from importlib import resources

from sac.errors import StorageError
from sac.store.sql import Exec, Query, Transaction

__all__ = ["Migration", "load_migrations", "migrate"]

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def load_migrations(dialect: str) -> list[Migration]:
    """The migrations shipped for ``dialect`` (``sqlite`` or ``postgresql``), in order."""
    folder = resources.files("sac.store") / "migrations" / dialect
    found = []
    for entry in folder.iterdir():
        m = _NAME.match(entry.name)
        if m is None:
            continue
        text = entry.read_text()
        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        statements = tuple(s.strip() for s in body.split(";") if s.strip())
        found.append(Migration(int(m.group(1)), m.group(2), statements))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if versions != list(range(1, len(found) + 1)):
        raise StorageError(f"{dialect} migrations are not numbered 1..n: {versions}")
    return found


# pg_advisory_xact_lock key: "SAC" + 1
_MIGRATION_LOCK = 0x53414301


def migrate(
    migrations: list[Migration], now: dt.datetime, dialect: str
) -> Transaction[tuple[int, int]]:
    """Bring the schema up to date; (version found, version now).  A database made by a newer
    sac is refused.  Several processes starting at once on one PostgreSQL database take turns
    (a transaction-scoped advisory lock); SQLite's BEGIN IMMEDIATE does the same."""
    if dialect == "postgresql":
        yield Query(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
    yield Exec(
        "CREATE TABLE IF NOT EXISTS schema_version"
        " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied TEXT NOT NULL)"
    )
    rows = yield Query("SELECT max(version) FROM schema_version")
    found = rows[0][0] or 0
    latest = migrations[-1].version if migrations else 0
    if found > latest:
        raise StorageError(
            f"the database has schema version {found}, newer than this sac knows ({latest}):"
            " run the newer sac, or restore a backup made for this one"
        )
    for migration in migrations[found:]:
        for statement in migration.statements:
            yield Exec(statement)
        yield Exec(
            "INSERT INTO schema_version (version, name, applied) VALUES (?, ?, ?)",
            (migration.version, migration.name, now.isoformat()),
        )
    return found, latest
