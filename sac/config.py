"""The SAC's configuration: an INI file (``sac.ini.example`` documents every line), each
setting also from the environment as ``SAC_<SECTION>_<NAME>`` (the environment wins), checked
at start with every problem listed at once.

Secrets never come from the file: the master key is ``$SAC_MASTER_KEY`` or the file named by
``[store] master_key_file``; the PostgreSQL password is ``$SAC_STORE_PASSWORD``, the file named
by ``[store] password_file``, or libpq's own ``~/.pgpass``.  A file that holds a secret
anyway (``master_key = ...``, a password in the store's address) is refused, so that a
configuration file can be shown, copied and versioned without leaking one.

    config = load_config("/etc/sac/sac.ini")   # ConfigurationError listing every problem
    config.push.listen                          # ('tcp:4059:backlog=1024',)
    config.source("push", "listen")             # 'file /etc/sac/sac.ini' | 'environment ...'
"""

from __future__ import annotations

import configparser
import difflib
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sac.errors import ConfigurationError
from sac.keys import ENV_MASTER_KEY, MasterKey
from sac.store.factory import is_postgres

__all__ = [
    "ENV_CONFIG",
    "SETTINGS",
    "Config",
    "ConfigProblems",
    "Setting",
    "load_config",
]

ENV_CONFIG = "SAC_CONFIG"  # the configuration file, when --config is not given
ENV_STORE_PASSWORD = "SAC_STORE_PASSWORD"


class ConfigProblems(ConfigurationError):
    """Every problem found in a configuration, one a line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        count = f"{len(problems)} problem" + ("s" if len(problems) > 1 else "")
        super().__init__(
            f"the configuration has {count}:\n" + "\n".join(f"  - {p}" for p in problems)
        )


# --- the values a setting may take --------------------------------------------------------


def _text(value: str) -> str:
    return value


def _bounded(
    convert: Callable[[str], Any], low: Any, high: Any, what: str, unit: str = ""
) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        try:
            number = convert(value.replace("_", ""))
        except ValueError:
            raise ValueError(f"{value!r} is not {what}") from None
        if not low <= number <= high:
            raise ValueError(f"{number:,g}{unit} is not between {low:,g} and {high:,g}{unit}")
        return number

    return parse


def _integer(low: int, high: int) -> Callable[[str], int]:
    return _bounded(int, low, high, "a whole number")


def _seconds(low: float, high: float) -> Callable[[str], float]:
    return _bounded(float, low, high, "a number of seconds", " s")


_TRUE = {"yes", "true", "on", "1"}
_FALSE = {"no", "false", "off", "0"}


def _boolean(value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError(f"{value!r} is not yes or no")


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.lower() not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return value.lower()

    return parse


def _words(value: str) -> tuple[str, ...]:
    return tuple(value.split())


def _stream_listeners(value: str) -> tuple[str, ...]:
    from twisted.internet import reactor

    from sac.protocols.listen import stream_endpoint

    descriptions = _words(value)
    for description in descriptions:
        try:
            stream_endpoint(reactor, description)  # parses it; reads a TLS certificate
        except ConfigurationError as exc:
            raise ValueError(str(exc).removeprefix(f"listener {description!r}: ")) from None
    return descriptions


def _datagram_listeners(value: str) -> tuple[str, ...]:
    from sac.protocols.listen import udp_address

    descriptions = _words(value)
    for description in descriptions:
        udp_address(description)
    return descriptions


def _system_title(value: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{value!r} is not hex") from None
    if len(raw) != 8:
        raise ValueError(f"a system title is 8 bytes (16 hex digits), not {len(raw)}")
    return raw


def _readable_file(value: str) -> Path | None:
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"no file {value}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{value} cannot be read by this user")
    return path


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def optional(value: str) -> Any:
        return parse(value) if value else None

    return optional


# an http(s) URL of a host name or address, an optional port and path, no query
_URL = re.compile(
    r"https?://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[A-Za-z0-9._~\-/]*)?"
)


def _public_url(value: str) -> str:
    if value and not _URL.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an http(s) URL without query, e.g. https://sac.example.com"
        )
    return value.rstrip("/")


def _log_file(value: str) -> str:
    if value in ("-", "stdout", "stderr"):
        return value
    folder = Path(value).parent
    if not folder.is_dir():
        raise ValueError(f"no directory {folder} for the log file")
    return value


def _store_address(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("empty: a SQLite path (sqlite:/var/lib/sac/sac.db) or a PostgreSQL DSN")
    if is_postgres(value):
        _libpq_parameters(value)
        return _without_password(value)
    path = Path(value.removeprefix("sqlite://").removeprefix("sqlite:"))
    if not path.parent.is_dir():
        raise ValueError(f"no directory {path.parent} for the SQLite file")
    return value


def _libpq_parameters(address: str) -> dict[str, str]:
    """A PostgreSQL address's parameters as libpq reads it (a URI, ``user:secret@`` and
    ``?password=`` included, or key=value pairs); the error never repeats the address."""
    from psycopg2 import ProgrammingError
    from psycopg2.extensions import parse_dsn

    try:
        return dict(parse_dsn(address))
    except ProgrammingError:
        raise ValueError(
            "not a PostgreSQL URI (postgresql://user@host/db) or key=value DSN (host=... "
            "dbname=...) that libpq can read"
        ) from None


def _password_in(address: str) -> str | None:
    """The password a PostgreSQL address holds, if any."""
    if not is_postgres(address):
        return None
    try:
        return _libpq_parameters(address).get("password")
    except ValueError:
        return None


def _without_password(address: str) -> str:
    """``address`` as libpq reads it without its password (as key=value pairs then), else
    as it is."""
    if _password_in(address) is None:
        return address
    from psycopg2.extensions import make_dsn

    parameters = _libpq_parameters(address)
    del parameters["password"]
    return str(make_dsn(**parameters))


# --- the settings -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    section: str
    name: str
    default: str
    parse: Callable[[str], Any]
    help: str

    @property
    def env(self) -> str:
        return f"SAC_{self.section}_{self.name}".upper()


def _s(section: str, name: str, default: str, parse: Callable[[str], Any], help: str) -> Setting:
    return Setting(section, name, default, parse, help)


SETTINGS: tuple[Setting, ...] = (
    # [sac]: this process
    _s("sac", "name", "", _text, "this process in the command log (default: the host name)"),
    _s("sac", "system_title", "5341435341435341", _system_title,
       "the SAC's DLMS system title, 16 hex digits (default SACSACSA)"),
    _s("sac", "stop_grace", "10", _seconds(0, 600),
       "seconds sessions in flight may take to finish at a stop, then they are cut"),
    # [store]
    _s("store", "address", "sqlite:sac.db", _store_address,
       "sqlite:PATH (embedded) or a PostgreSQL URI/DSN without its password"),
    _s("store", "connections", "4", _integer(1, 100), "PostgreSQL connections of this process"),
    _s("store", "master_key_file", "", _readable_file,
       "file holding the master key (64 hex digits); or set $SAC_MASTER_KEY"),
    _s("store", "password_file", "", _readable_file,
       "file holding the PostgreSQL password; or set $SAC_STORE_PASSWORD, or use ~/.pgpass"),
    _s("store", "keep_connections_days", "400", _integer(1, 100 * 366),
       "days each session's record (meters' connections) is kept, then forgotten"),
    # [push]: meters calling in
    _s("push", "listen", "tcp:4059:backlog=1024", _stream_listeners,
       "endpoints for push sessions, space-separated: tcp:PORT[:interface=ADDR][:backlog=N], "
       "ssl:PORT:privateKey=KEY:certKey=CERT; empty for none"),
    _s("push", "udp", "", _datagram_listeners,
       "endpoints for pushed datagrams: udp:PORT[:interface=ADDR]; empty for none"),
    _s("push", "spool", "spool", _text,
       "directory where pushes wait while the store is slow or down (one per process)"),
    _s("push", "spool_max_mb", "2048", _integer(1, 1_000_000), "most the spool may hold, MiB"),
    _s("push", "spool_per_address", "1000", _integer(0, 10_000_000),
       "pushes from one source address the spool may hold at once; 0: no limit"),
    _s("push", "store_timeout", "5", _seconds(0.1, 300),
       "seconds a push may wait for the store before it is spooled"),
    _s("push", "max_pdu", "4096", _integer(64, 65_535), "largest APDU a meter may send, bytes"),
    _s("push", "idle_timeout", "30", _seconds(1, 3600),
       "seconds a meter may stay silent before its push"),
    _s("push", "push_within", "20", _seconds(1, 3600),
       "seconds from a connect to its complete push; later, the connection is cut"),
    _s("push", "session_timeout", "120", _seconds(1, 3600), "seconds a session may last"),
    _s("push", "response_timeout", "10", _seconds(0.1, 600),
       "seconds a meter has to answer a request"),
    _s("push", "max_sessions", "20000", _integer(1, 1_000_000),
       "connections at once; beyond, the oldest yet to push is evicted, else refused"),
    _s("push", "read_plan", "yes", _boolean,
       "after a push, read what the meter's profile plans (battery, logbooks...) when due"),
    # [poll]: the SAC dialling meters that listen
    _s("poll", "enabled", "yes", _boolean, "run the poll scheduler in this process"),
    _s("poll", "interval", "86400", _integer(60, 366 * 86_400),
       "seconds between polls of a meter (a meter's own interval wins)"),
    _s("poll", "concurrency", "50", _integer(1, 10_000), "polls at once, this process"),
    _s("poll", "connect_timeout", "10", _seconds(0.1, 600), "seconds to connect to a meter"),
    _s("poll", "response_timeout", "10", _seconds(0.1, 600),
       "seconds a meter has to answer a request"),
    _s("poll", "session_budget", "120", _seconds(1, 3600), "seconds a poll may last"),
    _s("poll", "retry_first", "60", _seconds(1, 86_400),
       "seconds before the first retry of a failed poll (doubled each time)"),
    # [commands]: the queue's housekeeping
    _s("commands", "housekeeping_every", "60", _seconds(1, 3600),
       "seconds between expiring overdue commands and requeueing abandoned ones"),
    _s("commands", "stale_after", "600", _seconds(60, 86_400),
       "seconds after which a claimed, unfinished command goes back to the queue"),
    # [web]: pages, JSON API, SOAP, /metrics
    _s("web", "listen", "tcp:8080:interface=127.0.0.1", _stream_listeners,
       "endpoints for the web application, space-separated: tcp:PORT[:interface=ADDR] "
       "or ssl:PORT:privateKey=KEY:certKey=CERT; empty for none"),
    _s("web", "secure_cookies", "yes", _boolean,
       "cookies only over HTTPS (no only behind plain HTTP, as in the demo)"),
    _s("web", "session_hours", "8", _seconds(0.1, 24 * 30),
       "hours a sign-in lasts while in use"),
    _s("web", "session_max_hours", "12", _seconds(0.1, 24 * 30),
       "hours a sign-in lasts at most, in use or not"),
    _s("web", "name", "SAC", _text, "name shown in the pages' header"),
    _s("web", "metrics_public", "yes", _boolean, "/metrics without sign-in (for Prometheus)"),
    _s("web", "max_upload_mb", "20", _integer(1, 1024), "largest key CSV accepted, MiB"),
    _s("web", "sign_in_failures", "20", _integer(0, 1_000_000),
       "failed sign-ins an address may make in 10 minutes (0: no limit)"),
    _s("web", "password_checks", "4", _integer(1, 1000),
       "passwords checked at once (scrypt, 32 MiB each); more sign-ins wait their turn"),
    _s("web", "max_connections", "", _optional(_integer(1, 1_000_000)),
       "web connections at once; beyond, a new one is closed at once (empty: computed at "
       "start from the open-files limit, what [push] max_sessions and the rest leave)"),
    _s("web", "header_timeout", "10", _seconds(0.5, 600),
       "seconds from a connection (or the answer before) to a request's complete headers"),
    _s("web", "body_timeout", "120", _seconds(0.5, 3600),
       "seconds from a request's headers to its complete body"),
    _s("web", "public_url", "", _public_url,
       "the web application's URL as clients reach it, e.g. https://sac.example.com (names "
       "the SOAP address in the WSDL; empty: the URL each client used)"),
    # [log]
    _s("log", "format", "text", _choice("text", "json"), "text lines, or JSON lines"),
    _s("log", "level", "info", _choice("debug", "info", "warn", "error", "critical"),
       "the least severe level written"),
    _s("log", "file", "-", _log_file, "- (standard output, for journald), stderr, or a path"),
)  # fmt: skip

_BY_KEY = {(s.section, s.name): s for s in SETTINGS}
_SECTIONS = tuple(dict.fromkeys(s.section for s in SETTINGS))
# names of secrets that do not belong in the file, and where they go instead
_SECRETS = {
    ("store", "master_key"): f"${ENV_MASTER_KEY} or [store] master_key_file",
    ("store", "password"): f"${ENV_STORE_PASSWORD} or [store] password_file",
}
# older or shorter names of the environment, still read
_ENV_ALIASES = {"SAC_STORE": ("store", "address")}


# --- the result ---------------------------------------------------------------------------


class _Section:
    """One section's values as attributes: ``config.push.listen``."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)

    if TYPE_CHECKING:  # the attributes are the section's options (_SECTIONS)

        def __getattr__(self, name: str) -> Any: ...

    def __repr__(self) -> str:
        return f"<section {sorted(self.__dict__)}>"


@dataclass(frozen=True)
class Config:
    values: Mapping[tuple[str, str], Any]
    sources: Mapping[tuple[str, str], str]
    file: Path | None = None
    master_key: MasterKey | None = field(default=None, repr=False)
    store_password: str | None = field(default=None, repr=False)

    def __getattr__(self, section: str) -> _Section:
        if section not in _SECTIONS:
            raise AttributeError(section)
        return _Section({n: v for (s, n), v in self.values.items() if s == section})

    def source(self, section: str, name: str) -> str:
        return self.sources[(section, name)]

    @property
    def process_name(self) -> str:
        return self.values[("sac", "name")] or socket.gethostname()

    @property
    def store_dsn(self) -> str:
        """The store's address, with the PostgreSQL password when one was given (never log
        or show this one: :attr:`values` has the address without it)."""
        return self.with_password(self.values[("store", "address")])

    def with_password(self, address: str) -> str:
        """``address`` with the configured PostgreSQL password, if any and if PostgreSQL."""
        if self.store_password and is_postgres(address):
            from psycopg2.extensions import make_dsn

            return str(make_dsn(address, password=self.store_password))
        return address

    def shown(self) -> Iterator[tuple[str, str, str]]:
        """(``[section] name``, value as written, where it came from), secrets left out."""
        for s in SETTINGS:
            value = self.values[(s.section, s.name)]
            if isinstance(value, tuple):
                text = " ".join(value) or "(none)"
            elif isinstance(value, bool):
                text = "yes" if value else "no"
            elif isinstance(value, bytes):
                text = value.hex()
            elif value is None or value == "":
                text = "(none)"
            else:
                text = f"{value:g}" if isinstance(value, float) else str(value)
            yield f"[{s.section}] {s.name}", text, self.sources[(s.section, s.name)]
        master = "set" if self.master_key else "missing"
        yield "master key", master, self.sources.get(("store", "master_key"), "")


_Raw = dict[tuple[str, str], tuple[str, str]]  # (section, name): (text, where it came from)


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    need_master_key: bool = True,
) -> Config:
    """Read ``path`` (else ``$SAC_CONFIG``, else no file) and the environment; raise
    :class:`ConfigProblems` with every problem found."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    chosen = path if path is not None else env.get(ENV_CONFIG) or None
    file = Path(chosen) if chosen else None
    raw = _raw_settings(file, env, problems)
    values = _parse_settings(raw, problems)
    sources = {key: source for key, (_, source) in raw.items()}
    embedded = _embedded_password(raw, problems)
    master_key, where = _secret_master_key(env, values, problems)
    if where:
        sources[("store", "master_key")] = where
    if need_master_key and master_key is None and not any("master key" in p for p in problems):
        problems.append(
            f"no master key: set ${ENV_MASTER_KEY} (64 hex digits, `sac-admin new-master-key`"
            " makes one) or [store] master_key_file"
        )
    password = _secret_password(env, values, problems)
    if embedded is not None:  # from the environment: used, and kept out of `values`
        if password is not None and password != embedded:
            problems.append(
                f"[store] address ({sources[('store', 'address')]}): holds a password, and"
                f" another is given as {_SECRETS[('store', 'password')]}: give one"
            )
        password = embedded
    if problems:
        raise ConfigProblems(problems)
    return Config(values, sources, file, master_key, password)


def _raw_settings(file: Path | None, env: Mapping[str, str], problems: list[str]) -> _Raw:
    """Each setting's text and source: its default, over it the file's, over that the
    environment's."""
    raw: _Raw = {(s.section, s.name): (s.default, "default") for s in SETTINGS}
    if file is not None:
        problems += _read_file(file, raw)
    for name, key in _ENV_ALIASES.items():
        if env.get(name):
            raw[key] = (env[name], f"environment {name}")
    for s in SETTINGS:
        if s.env in env:
            raw[(s.section, s.name)] = (env[s.env], f"environment {s.env}")
    return raw


def _parse_settings(raw: _Raw, problems: list[str]) -> dict[tuple[str, str], Any]:
    values: dict[tuple[str, str], Any] = {}
    for key, (text, source) in raw.items():
        s = _BY_KEY[key]
        try:
            values[key] = s.parse(text.strip())
        except (ValueError, ConfigurationError) as exc:
            problems.append(f"[{s.section}] {s.name} ({source}): {exc}")
    return values


def _embedded_password(raw: _Raw, problems: list[str]) -> str | None:
    """The password in the store's address, when it came from the environment; one written
    in the file is a problem (the file is no place for a secret)."""
    text, source = raw[("store", "address")]
    embedded = _password_in(text.strip())
    if embedded is not None and source.startswith("file"):
        problems.append(
            f"[store] address ({source}): holds a password; "
            f"give it as {_SECRETS[('store', 'password')]} instead"
        )
        return None
    return embedded


def _read_file(file: Path, raw: dict[tuple[str, str], tuple[str, str]]) -> list[str]:
    parser = configparser.ConfigParser(interpolation=None, empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        with file.open(encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as exc:
        return [f"configuration file {file}: {exc.strerror or exc}"]
    except (configparser.Error, UnicodeDecodeError) as exc:
        return [f"configuration file {file}: {' '.join(str(exc).split())}"]
    problems = []
    for section in parser.sections():
        if section not in _SECTIONS:
            problems.append(
                f"{file}: unknown section [{section}]{_did_you_mean(section, _SECTIONS)}"
            )
            continue
        for name, value in parser.items(section):
            key = (section, name.lower())
            if key in _SECRETS:
                problems.append(
                    f"{file}: [{section}] {name}: a secret does not belong in the"
                    f" configuration file; give it as {_SECRETS[key]}"
                )
            elif key not in _BY_KEY:
                names = [n for s, n in _BY_KEY if s == section]
                problems.append(
                    f"{file}: unknown setting [{section}] {name}{_did_you_mean(name, names)}"
                )
            else:
                raw[key] = (value, f"file {file}")
    return problems


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word.lower(), list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _secret_file(path: Path, what: str, problems: list[str]) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{what} file {path}: {exc}")
        return None
    if not text:
        problems.append(f"{what} file {path} is empty")
        return None
    return text


def _secret_master_key(
    env: Mapping[str, str], values: Mapping[tuple[str, str], Any], problems: list[str]
) -> tuple[MasterKey | None, str]:
    text, where = env.get(ENV_MASTER_KEY), f"environment {ENV_MASTER_KEY}"
    path = values.get(("store", "master_key_file"))
    if not text and path is not None:
        text, where = _secret_file(path, "master key", problems), f"file {path}"
    if not text:
        return None, ""
    try:
        return MasterKey.from_text(text), where
    except ConfigurationError as exc:
        problems.append(f"master key ({where}): {exc}")
        return None, ""


def _secret_password(
    env: Mapping[str, str], values: Mapping[tuple[str, str], Any], problems: list[str]
) -> str | None:
    if env.get(ENV_STORE_PASSWORD):
        return env[ENV_STORE_PASSWORD]
    path = values.get(("store", "password_file"))
    return _secret_file(path, "store password", problems) if path is not None else None
