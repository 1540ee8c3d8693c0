"""The meters' events in words: the UNI/TS event codes logged in the event and metrological
logbooks (0.0.96.11.2.255, 0.0.96.11.1.255), each with its name in Italian and English, its
category and its severity.

(The diagnostic bits have no public definition, docs/uni-ts-11291.md §1.9: a profile names
its own, ``MeterProfile.diagnostic_bits``, and the pages show the others as unknown bits.)

Sources (docs/uni-ts-11291.md §1.9): the codes and their meanings are where two public
implementations agree (HW-A2 ``A2MetrologicalEventLog.java``, OGM ``EventCode.java``).  Codes
from 193 on belong to the manufacturer: a profile names its own (``Profile.events``).  A code
nobody names is shown as "unknown (code N)", never dropped.

The category and severity are sac's own classification, inferred from the names (no public
source classes them): an event of severity ``ALARM`` opens an alarm that an operator
acknowledges; ``WARNING`` is shown apart but opens none; ``INFO`` is the meter's diary.  A
profile that classes a code otherwise names it in its own table.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "MANUFACTURER_CODES",
    "UNI_TS_EVENTS",
    "Category",
    "EventKind",
    "Severity",
    "describe",
]


class Severity(enum.Enum):
    ALARM = "alarm"
    WARNING = "warning"
    INFO = "info"


class Category(enum.Enum):
    VALVE = "valve"
    BATTERY = "battery"
    TAMPER = "tamper"
    CLOCK = "clock"
    SECURITY = "security"
    KEY = "key"
    FIRMWARE = "firmware"
    BILLING = "billing"
    METROLOGY = "metrology"
    POWER = "power"
    DEVICE = "device"
    COMMUNICATION = "communication"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class EventKind:
    code: int
    english: str
    italian: str
    category: Category
    severity: Severity

    def name(self, language: str = "it") -> str:
        return self.italian if language == "it" else self.english


MANUFACTURER_CODES = range(193, 256)

_A, _W, _I = Severity.ALARM, Severity.WARNING, Severity.INFO
_C = Category


def _kinds(
    *rows: tuple[int, str, str, Category, Severity],
) -> dict[int, EventKind]:
    return {row[0]: EventKind(*row) for row in rows}


UNI_TS_EVENTS: Mapping[int, EventKind] = _kinds(
    (1, "device reset", "reset del dispositivo", _C.DEVICE, _W),
    (2, "metrological log reset", "azzeramento del registro metrologico", _C.METROLOGY, _A),
    (8, "new tariff plan activated", "nuovo piano tariffario attivato", _C.BILLING, _I),
    (9, "new tariff plan programmed", "nuovo piano tariffario programmato", _C.BILLING, _I),
    (10, "clock synchronisation failed", "sincronizzazione dell'orologio fallita", _C.CLOCK, _W),
    (12, "clock synchronised", "orologio sincronizzato", _C.CLOCK, _I),
    (15, "metrological parameter configured", "parametro metrologico configurato",
     _C.METROLOGY, _I),
    (30, "valve closed by command", "valvola chiusa da comando", _C.VALVE, _I),
    (31, "valve opened", "valvola aperta", _C.VALVE, _I),
    (66, "memory fault", "guasto della memoria", _C.DEVICE, _A),
    (67, "device status changed", "stato del dispositivo cambiato", _C.DEVICE, _I),
    (72, "mains power lost", "alimentazione esterna assente", _C.POWER, _W),
    (73, "mains power back", "alimentazione esterna ripristinata", _C.POWER, _I),
    (74, "battery below 10 %", "batteria sotto il 10 %", _C.BATTERY, _W),
    (80, "tampering begins", "inizio manomissione", _C.TAMPER, _A),
    (81, "tampering ends", "fine manomissione", _C.TAMPER, _I),
    (86, "daylight saving time begins", "inizio ora legale", _C.CLOCK, _I),
    (87, "daylight saving time ends", "fine ora legale", _C.CLOCK, _I),
    (90, "billing period closed (periodic)", "chiusura periodo di fatturazione (periodica)",
     _C.BILLING, _I),
    (91, "billing period closed (tariff change)",
     "chiusura periodo di fatturazione (cambio tariffa)", _C.BILLING, _I),
    (92, "billing period closed (local)", "chiusura periodo di fatturazione (locale)",
     _C.BILLING, _I),
    (93, "billing period closed (remote)", "chiusura periodo di fatturazione (remota)",
     _C.BILLING, _I),
    (94, "battery critical", "batteria in stato critico", _C.BATTERY, _A),
    (95, "battery critical", "batteria in stato critico", _C.BATTERY, _A),
    *[(code, f"firmware update (step {code - 95} of 6)",
       f"aggiornamento firmware (passo {code - 95} di 6)", _C.FIRMWARE, _I)
      for code in range(96, 102)],
    (102, "valve closed on a leak", "valvola chiusa per perdita", _C.VALVE, _A),
    (103, "battery removed", "batteria rimossa", _C.BATTERY, _A),
    (104, "battery critical", "batteria in stato critico", _C.BATTERY, _A),
    (105, "measurement fault", "guasto di misura", _C.METROLOGY, _A),
    (106, "wrong valve PIN", "PIN della valvola errato", _C.VALVE, _W),
    (107, "no communication: the valve closes", "nessuna comunicazione: la valvola chiude",
     _C.COMMUNICATION, _A),
    (108, "new valve PIN", "nuovo PIN della valvola", _C.VALVE, _I),
    (109, "valve ready to open (valid PIN)", "valvola pronta all'apertura (PIN valido)",
     _C.VALVE, _I),
    (110, "valve ready to open (command)", "valvola pronta all'apertura (comando)",
     _C.VALVE, _I),
    (111, "opening period begins", "inizio periodo di apertura", _C.VALVE, _I),
    (112, "opening period ends", "fine periodo di apertura", _C.VALVE, _I),
    (113, "valve closed with a leak", "valvola chiusa con perdita", _C.VALVE, _A),
    (114, "valve cannot open or close", "la valvola non si apre o non si chiude", _C.VALVE, _A),
    *[(code, "security event", "evento di sicurezza", _C.SECURITY, _W)
      for code in (116, 117, 118, 124)],
    (119, "decryption error", "errore di decifratura", _C.SECURITY, _A),
    (120, "authentication error", "errore di autenticazione", _C.SECURITY, _A),
    (121, "unauthorised access", "accesso non autorizzato", _C.SECURITY, _A),
    (122, "keys programmed", "chiavi programmate", _C.KEY, _I),
    (123, "keys activated", "chiavi attivate", _C.KEY, _I),
    *[(code, f"key changed: {key}", f"chiave cambiata: {key}", _C.KEY, _I)
      for code, key in zip(range(128, 134), ("master", "KEYC", "KEYT", "KEYS", "KEYN", "KEYM"),
                           strict=True)],
    (168, "PDR changed", "PDR cambiato", _C.DEVICE, _I),
    (171, "remote connection begins", "inizio connessione remota", _C.COMMUNICATION, _I),
    (172, "remote connection ends", "fine connessione remota", _C.COMMUNICATION, _I),
    (173, "remote connection timed out", "connessione remota scaduta", _C.COMMUNICATION, _W),
    (179, "valve closed after tampering attempts", "valvola chiusa dopo tentativi di manomissione",
     _C.VALVE, _A),
    (180, "valve closed: battery out too long", "valvola chiusa: batteria assente troppo a lungo",
     _C.VALVE, _A),
)  # fmt: skip


def describe(code: int, own: Mapping[int, EventKind] | None = None) -> EventKind:
    """What event ``code`` is: the profile's ``own`` names first (its manufacturer's codes, or
    a code it reads otherwise), then the UNI/TS ones; else said to be unknown."""
    if own and code in own:
        return own[code]
    if code in UNI_TS_EVENTS:
        return UNI_TS_EVENTS[code]
    if code in MANUFACTURER_CODES:
        return EventKind(
            code,
            f"manufacturer's event (code {code})",
            f"evento del costruttore (codice {code})",
            Category.UNKNOWN,
            Severity.INFO,
        )
    return EventKind(
        code, f"unknown (code {code})", f"sconosciuto (codice {code})", Category.UNKNOWN, _I
    )
