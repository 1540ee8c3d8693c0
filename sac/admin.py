"""``sac-admin``: the operator's commands on a store, outside the web application.

    sac-admin new-master-key
    sac-admin --store ADDRESS migrate                # or --config /etc/sac/sac.ini
    sac-admin --store ADDRESS rotate-master-key      # SAC_MASTER_KEY -> SAC_NEW_MASTER_KEY
    sac-admin --store ADDRESS import-keys FILE.csv [--replace]
    sac-admin --store ADDRESS add-user NAME --role admin   # password on stdin or asked
    sac-admin --store ADDRESS create-token USER NAME       # prints the API token once
    sac-admin --store ADDRESS revoke-token ID
    sac-admin --store ADDRESS reset-counters LDN     # after the meter's keys changed in the field

The store is ``--store``, else what the SAC's configuration says (``--config FILE`` or
``$SAC_CONFIG``, and ``$SAC_STORE`` or ``$SAC_STORE_ADDRESS``): a SQLite path or a PostgreSQL
DSN, its password from ``$SAC_STORE_PASSWORD`` or ``[store] password_file``.  Keys are never
taken from the command line (other users see it in ``ps``): the master key comes from
``$SAC_MASTER_KEY`` or ``[store] master_key_file``, the new one from ``$SAC_NEW_MASTER_KEY``.
Every change is in the audit trail as ``sac-admin (<login>)``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from sac.config import ENV_CONFIG, load_config
from sac.console import run_command
from sac.errors import SacError
from sac.keys import ENV_MASTER_KEY, MasterKey, new_master_key
from sac.store import Actor, KeyImportError, Role, Store
from sac.store.factory import store_at
from sac.store.keycsv import parse_key_csv

__all__ = ["main"]

ENV_NEW_MASTER_KEY = "SAC_NEW_MASTER_KEY"
ENV_STORE = "SAC_STORE"


def _actor() -> Actor:
    return Actor(f"sac-admin ({getpass.getuser()})", "local")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sac-admin", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        default=os.environ.get(ENV_CONFIG) or None,
        help=f"the SAC's configuration file, for the store and its secrets (default ${ENV_CONFIG})",
    )
    parser.add_argument(
        "--store", default="", help="the store's address (default: as the configuration says)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("new-master-key", help="print a new random master key")
    commands.add_parser("migrate", help="bring the store's schema up to date")
    commands.add_parser(
        "rotate-master-key",
        help=f"re-wrap every meter key from ${ENV_MASTER_KEY} to ${ENV_NEW_MASTER_KEY}",
    )
    keys = commands.add_parser("import-keys", help="import meter keys from a CSV file")
    keys.add_argument("file", type=Path)
    keys.add_argument("--replace", action="store_true", help="replace keys already present")
    user = commands.add_parser(
        "add-user", aliases=["create-user"], help="add a user (password on stdin)"
    )
    user.add_argument("name")
    user.add_argument("--role", choices=[r.value for r in Role], required=True)
    token = commands.add_parser(
        "create-token", help="make an API token acting as USER; printed once, on stdout"
    )
    token.add_argument("user")
    token.add_argument("name", help="what the token is for, e.g. the system using it")
    revoke = commands.add_parser("revoke-token", help="revoke an API token by its number")
    revoke.add_argument("id", type=int)
    reset = commands.add_parser(
        "reset-counters",
        help="forget a meter's invocation counters, after its keys were changed in the field"
        " (the SAC starts again from 0 with it; never after a mere restore of the store)",
    )
    reset.add_argument("ldn")
    return parser


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if first != getpass.getpass("again: "):
            raise SacError("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


async def _run(reactor: Any, args: argparse.Namespace) -> int:
    # the store, its password and the master key as the SAC finds them (sac.ini, SAC_*)
    config = load_config(args.config, need_master_key=False)
    if not args.store and config.source("store", "address") == "default":
        raise SacError(
            f"which store? --store ADDRESS, ${ENV_STORE} (or $SAC_STORE_ADDRESS), or --config FILE"
        )
    address = config.with_password(args.store) if args.store else config.store_dsn
    store = store_at(address, config.master_key, reactor=reactor)
    try:
        found, now = await store.open()  # applies the migrations: all `migrate` does
        if args.command == "migrate":
            print(f"schema version {found} -> {now}")
        else:
            await _COMMANDS[args.command](store, args)
    finally:
        await store.close()
    return 0


async def _rotate_master_key(store: Store, args: argparse.Namespace) -> None:
    new = MasterKey.from_environment({ENV_MASTER_KEY: os.environ.get(ENV_NEW_MASTER_KEY, "")})
    if new is None:
        raise SacError(f"set {ENV_NEW_MASTER_KEY} to the new master key")
    count = await store.keys.rotate_master(new, by=_actor())
    print(f"{count} wrapped keys (EK, AK) re-wrapped under master key {new.id_hex}")
    print(f"set {ENV_MASTER_KEY} to the new key before the next start")


async def _import_keys(store: Store, args: argparse.Namespace) -> None:
    rows, errors = parse_key_csv(args.file.read_text(encoding="utf-8-sig"))
    if errors:
        raise KeyImportError(errors)
    count = await store.keys.import_rows(rows, replace=args.replace, by=_actor())
    print(f"{count} keys imported from {args.file}")


async def _add_user(store: Store, args: argparse.Namespace) -> None:
    user = await store.users.add(args.name, _read_password(), Role(args.role), _actor())
    print(f"user {user.name} ({user.role.value}) added")


async def _create_token(store: Store, args: argparse.Namespace) -> None:
    secret, token = await store.tokens.create(args.user, args.name, _actor())
    # the secret alone on stdout (for a script to capture), what it is on stderr
    print(secret)
    print(
        f"API token #{token.id} {token.name!r} acts as {token.user.name}"
        f" ({token.user.role.value}); it is shown this once",
        file=sys.stderr,
    )


async def _revoke_token(store: Store, args: argparse.Namespace) -> None:
    try:
        await store.tokens.revoke(args.id, _actor())
    except KeyError:
        raise SacError(f"no API token #{args.id}") from None
    print(f"API token #{args.id} revoked")


async def _reset_counters(store: Store, args: argparse.Namespace) -> None:
    count = await store.counters.reset(args.ldn, _actor())
    print(f"meter {args.ldn}: the invocation counters of {count} clients reset")


# the commands on an open store, by the name typed (an alias included); `migrate` is the
# opening itself, `new-master-key` needs no store
_COMMANDS: dict[str, Callable[[Store, argparse.Namespace], Awaitable[None]]] = {
    "rotate-master-key": _rotate_master_key,
    "import-keys": _import_keys,
    "add-user": _add_user,
    "create-user": _add_user,
    "create-token": _create_token,
    "revoke-token": _revoke_token,
    "reset-counters": _reset_counters,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "new-master-key":
        print(new_master_key())
        return 0

    async def command(reactor: Any) -> int:
        try:
            return await _run(reactor, args)
        except KeyImportError as exc:
            for error in exc.errors:
                print(f"{args.file}: {error}", file=sys.stderr)
            print(f"nothing imported: {len(exc.errors)} bad lines", file=sys.stderr)
            return 1

    return run_command("sac-admin", command)


if __name__ == "__main__":
    sys.exit(main())
