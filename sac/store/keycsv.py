"""Meter keys from a CSV file: every bad line reported by number, then all rows or none.

Columns (a header line first; ``,`` or ``;`` between fields)::

    ldn,client,ek,ak
    FIO0000012345678,1,4D5944554D4D59474C4F42414C4B4559,
    FIO0000012345679,1,000102030405060708090A0B0C0D0E0F,D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF

``ldn`` the meter's 16-character logical device name; ``client`` the client SAP (1 =
Management, the default when the column is empty or absent); ``ek`` the 16-byte key as 32 hex
digits; ``ak`` the authentication key, empty when it is the EK (Italian practice).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from sac.store.model import ldn_problem

__all__ = ["SAMPLE", "KeyRow", "RowError", "parse_key_csv"]

SAMPLE = (
    "ldn,client,ek,ak\n"
    "FIO0000012345678,1,4D5944554D4D59474C4F42414C4B4559,\n"
    "FIO0000012345679,1,000102030405060708090A0B0C0D0E0F,D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF\n"
)
_COLUMNS = ("ldn", "client", "ek", "ak")
_KEYISH = frozenset("0123456789abcdefABCDEF :")


def _shown(text: str) -> str:
    """A bad LDN as an error repeats it: not when it may be a key in the wrong column."""
    if len(text) >= 8 and not set(text) - _KEYISH:
        return f"({len(text)} characters like a key: not repeated)"
    return repr(text)


@dataclass(frozen=True, slots=True)
class KeyRow:
    line: int
    ldn: str
    client_sap: int
    ek: bytes = field(repr=False)
    ak: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


def _key(text: str, name: str) -> bytes:
    text = text.strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{name} is not hex") from None
    if len(raw) != 16:
        raise ValueError(f"{name} has {len(raw)} bytes, not 16 (32 hex digits)")
    return raw


def parse_key_csv(text: str) -> tuple[list[KeyRow], list[RowError]]:
    """The good rows and the bad ones; a file with any bad row must not be imported."""
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        return [], [RowError(1, "the file is empty: a header line is expected")]
    delimiter = ";" if lines[0].count(";") > lines[0].count(",") else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [h.strip().lower() for h in next(reader)]
    missing = [c for c in ("ldn", "ek") if c not in header]
    unknown = [c for c in header if c not in _COLUMNS]
    if missing or unknown:
        reason = f"the header needs columns {', '.join(_COLUMNS[:3])}[, ak]"
        return [], [RowError(1, f"{reason}; missing {missing or '-'}, unknown {unknown or '-'}")]
    rows: list[KeyRow] = []
    errors: list[RowError] = []
    seen: dict[tuple[str, int], int] = {}
    for fields in reader:
        line = reader.line_num
        if not any(f.strip() for f in fields):
            continue
        if len(fields) > len(header):
            errors.append(RowError(line, f"{len(fields)} fields, the header has {len(header)}"))
            continue
        record = dict(zip(header, (f.strip() for f in fields), strict=False))
        try:
            row = _row(line, record)
        except ValueError as exc:
            reason = str(exc) if "invalid literal" not in str(exc) else "client is not a number"
            errors.append(RowError(line, reason))
            continue
        first = seen.setdefault((row.ldn, row.client_sap), line)
        if first != line:
            errors.append(
                RowError(line, f"{row.ldn} client {row.client_sap} already on line {first}")
            )
            continue
        rows.append(row)
    return rows, errors


def _row(line: int, record: dict[str, str]) -> KeyRow:
    """One line's fields by column; ValueError says what is wrong."""
    ldn = record.get("ldn", "")
    problem = ldn_problem(ldn)
    if problem is not None:
        raise ValueError(f"LDN {_shown(ldn)}: {problem}")
    client = int(record.get("client") or 1)
    if not 0 < client < 0x10000:
        raise ValueError(f"client {client} is not a SAP (1..65535)")
    ek = _key(record.get("ek", ""), "EK")
    ak = _key(record["ak"], "AK") if record.get("ak") else None
    return KeyRow(line, ldn, client, ek, ak)
