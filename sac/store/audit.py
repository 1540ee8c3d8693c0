"""The audit trail: who changed what, from where, in the transaction of the change."""

from __future__ import annotations

import datetime as dt
from typing import TypeVar

from zope.interface import Interface, implementer

from sac.store.model import Actor, AuditEntry
from sac.store.sql import Component, Exec, Query, Transaction, stamp

__all__ = ["AUDIT_LIMITS", "AuditComponent", "IAudit", "audit", "audited"]

# the most characters of each field of an audit line: what comes from outside (a user name
# tried at sign-in, an LDN in a SOAP call) may be any length, the trail's lines are not
T = TypeVar("T")

AUDIT_LIMITS = {"actor": 100, "address": 64, "action": 100, "target": 200, "detail": 2000}


def clip(text: str | None, limit: int) -> str | None:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "\u2026"


def audit(
    by: Actor, action: str, target: str | None, detail: str | None, now: dt.datetime
) -> Transaction[None]:
    """One line of the audit trail, in the transaction of the change it records; each field
    cut to its :data:`AUDIT_LIMITS` (every line is written here)."""
    fields = {
        "actor": by.name,
        "address": by.address,
        "action": action,
        "target": target,
        "detail": detail,
    }
    yield Exec(
        "INSERT INTO audit (at, actor, address, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (now, *(clip(value, AUDIT_LIMITS[name]) for name, value in fields.items())),
    )


def audited(
    transaction: Transaction[T],
    by: Actor | None,
    action: str,
    target: str | None,
    now: dt.datetime,
    detail: str | None = None,
) -> Transaction[T]:
    """``transaction``, then its audit line: both or neither."""
    result = yield from transaction
    if by is not None:
        yield from audit(by, action, target, detail, now)
    return result


def audit_log(limit: int, before: int | None) -> Transaction[list[AuditEntry]]:
    """The latest audit lines, newest first; ``before``: ids below it (the next page)."""
    where, params = ("WHERE id < ? ", [before]) if before is not None else ("", [])
    rows = yield Query(
        "SELECT id, at, actor, address, action, target, detail FROM audit "
        f"{where}ORDER BY id DESC LIMIT ?",
        [*params, limit],
    )
    return [
        AuditEntry(i, stamp(at), actor, address, action, target, detail)
        for i, at, actor, address, action, target, detail in rows
    ]


class IAudit(Interface):
    async def record(
        by: Actor, action: str, target: str | None = None, detail: str | None = None
    ) -> None:
        """A line of the audit trail for an action that changes nothing stored (a login, an
        export)."""

    async def log(limit: int = 100, before: int | None = None) -> list[AuditEntry]:
        """The audit trail, newest first; ``before``: ids below it (the next page)."""


@implementer(IAudit)
class AuditComponent(Component):
    async def record(
        self, by: Actor, action: str, target: str | None = None, detail: str | None = None
    ) -> None:
        await self.db.run(audit(by, action, target, detail, self.db.now()))

    async def log(self, limit: int = 100, before: int | None = None) -> list[AuditEntry]:
        return await self.db.run(audit_log(limit, before))
