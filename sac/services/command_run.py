"""What a session does with a command's end: it is finished (or put back) in the store, the
meter's record follows what the command confirmed, and commands a session could not finish
go back to the queue."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from sac.errors import CommandStateError, SacError
from sac.services import commands as cmd
from sac.store.model import Actor, Command

if TYPE_CHECKING:
    from sac.services.session import SessionStore

__all__ = ["record", "requeue"]

log = Logger(namespace="sac.services.session")


async def record(store: SessionStore, ldn: str, command: Command, outcome: cmd.Outcome) -> None:
    """A command's outcome in the store: done or failed, or back in the queue (``ok`` None);
    then what it confirmed on the meter, on the meter's record."""
    if outcome.ok is None:
        await store.commands.retry(command.id, outcome.result)
    else:
        await store.commands.finish(command.id, outcome.ok, outcome.result)
    if outcome.ok and outcome.meter:
        await _confirmed(store, ldn, command, outcome.meter)
    log.info(
        "meter {ldn}: command {id} {kind}: {state} ({result})",
        ldn=ldn,
        id=command.id,
        kind=command.kind,
        state="done" if outcome.ok else ("failed" if outcome.ok is False else "pending"),
        result=outcome.result,
    )


async def _confirmed(
    store: SessionStore, ldn: str, command: Command, fields: Mapping[str, Any]
) -> None:
    """The meter's record follows what a command confirmed on the meter (its PDR read back),
    audited as the command's; a record that cannot take it is logged, the command stays done
    (the meter has the value)."""
    by = Actor(f"command {command.id} of {command.requested_by}")
    try:
        await store.meters.update(ldn, fields, by=by)
    except (SacError, ValueError) as exc:
        log.warn(
            "meter {ldn}: {fields} confirmed by command {id}, not recorded: {e}",
            ldn=ldn,
            fields=dict(fields),
            id=command.id,
            e=exc,
        )


async def requeue(
    store: cmd.CommandStore, commands: list[Command], why: str, *, attempts: int | None = None
) -> None:
    """Claimed commands a session did not finish go back to the queue (one conditional
    update each: a command already finished stays as it is) -- or, once a command has
    been claimed ``attempts`` times, fail with the last reason."""
    for command in commands:
        try:
            if attempts is not None and command.attempts >= attempts:
                await store.commands.finish(
                    command.id, False, f"{why} (given up after {command.attempts} attempts)"
                )
            else:
                await store.commands.retry(command.id, why)
        except CommandStateError:
            pass  # done or failed in this session before it broke
        except SacError as exc:
            log.warn("command {id}: not requeued: {e}", id=command.id, e=exc)
