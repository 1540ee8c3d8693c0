"""COSEM date, time and date-time values (12/5/4-byte forms), with "not specified" fields.

Fields hold the values as they are on the wire, ``None`` standing for "not specified"
(0xFF, 0xFFFF for the year, 0x8000 for the deviation).  Other special values (0xFD/0xFE for
"second last"/"last" day, DST begin/end months) are kept as they are.

``deviation`` is in minutes, with the DLMS meaning: local time = UTC - deviation, so CET is
-60.  Italian UNI/TS meters write the opposite sign (CET = +60); pass
``inverted_deviation=True`` when turning values to and from :class:`datetime.datetime`.
"""

from __future__ import annotations

import datetime as _dt
import struct
from dataclasses import dataclass

from sac.errors import DecodeError, EncodeError

__all__ = ["DAYLIGHT_SAVING_ACTIVE", "CosemDate", "CosemDateTime", "CosemTime"]

DAYLIGHT_SAVING_ACTIVE = 0x80  # clock_status bit 7

_DT = struct.Struct(">HBBBBBBBhB")
_DATE = struct.Struct(">HBBB")
_DEV_UNSPECIFIED = -0x8000


def _opt(value: int, unspecified: int) -> int | None:
    return None if value == unspecified else value


def _wire(value: int | None, unspecified: int, name: str, top: int) -> int:
    if value is None:
        return unspecified
    if not isinstance(value, int) or not 0 <= value <= top:
        raise EncodeError(f"{name} {value!r} is not in 0..{top}")
    return value


def _specified(*fields: int | None) -> list[int]:
    """The fields a calendar value needs; an unspecified one (None) raises the TypeError that
    ``datetime`` would."""
    if None in fields:
        raise TypeError("an unspecified field is not a point in time")
    return [f for f in fields if f is not None]


@dataclass(frozen=True, slots=True)
class CosemDate:
    year: int | None
    month: int | None
    day: int | None
    weekday: int | None = None

    @classmethod
    def from_bytes(cls, raw: bytes) -> CosemDate:
        if len(raw) != 5:
            raise DecodeError(f"a COSEM date has 5 bytes, not {len(raw)}")
        y, mo, d, wd = _DATE.unpack(raw)
        return cls(_opt(y, 0xFFFF), _opt(mo, 0xFF), _opt(d, 0xFF), _opt(wd, 0xFF))

    def to_bytes(self) -> bytes:
        return _DATE.pack(
            _wire(self.year, 0xFFFF, "year", 0xFFFE),
            _wire(self.month, 0xFF, "month", 0xFE),
            _wire(self.day, 0xFF, "day", 0xFE),
            _wire(self.weekday, 0xFF, "weekday", 0xFE),
        )

    def to_date(self) -> _dt.date:
        try:
            year, month, day = _specified(self.year, self.month, self.day)
            return _dt.date(year, month, day)
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"{self} is not a calendar date") from exc

    @classmethod
    def from_date(cls, value: _dt.date) -> CosemDate:
        return cls(value.year, value.month, value.day, value.isoweekday())


@dataclass(frozen=True, slots=True)
class CosemTime:
    hour: int | None
    minute: int | None
    second: int | None = 0
    hundredths: int | None = 0

    @classmethod
    def from_bytes(cls, raw: bytes) -> CosemTime:
        if len(raw) != 4:
            raise DecodeError(f"a COSEM time has 4 bytes, not {len(raw)}")
        return cls(*(_opt(b, 0xFF) for b in raw))

    def to_bytes(self) -> bytes:
        return bytes(
            (
                _wire(self.hour, 0xFF, "hour", 0xFE),
                _wire(self.minute, 0xFF, "minute", 0xFE),
                _wire(self.second, 0xFF, "second", 0xFE),
                _wire(self.hundredths, 0xFF, "hundredths", 0xFE),
            )
        )

    def to_time(self) -> _dt.time:
        try:
            hour, minute = _specified(self.hour, self.minute)
            return _dt.time(
                hour,
                minute,
                self.second or 0,
                (self.hundredths or 0) * 10_000,
            )
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"{self} is not a time of day") from exc


@dataclass(frozen=True, slots=True)
class CosemDateTime:
    year: int | None
    month: int | None
    day: int | None
    weekday: int | None
    hour: int | None
    minute: int | None
    second: int | None
    hundredths: int | None
    deviation: int | None
    status: int | None

    @classmethod
    def from_bytes(cls, raw: bytes) -> CosemDateTime:
        if len(raw) != 12:
            raise DecodeError(f"a COSEM date-time has 12 bytes, not {len(raw)}")
        y, mo, d, wd, h, mi, s, hs, dev, st = _DT.unpack(raw)
        return cls(
            _opt(y, 0xFFFF),
            _opt(mo, 0xFF),
            _opt(d, 0xFF),
            _opt(wd, 0xFF),
            _opt(h, 0xFF),
            _opt(mi, 0xFF),
            _opt(s, 0xFF),
            _opt(hs, 0xFF),
            _opt(dev, _DEV_UNSPECIFIED),
            _opt(st, 0xFF),
        )

    def to_bytes(self) -> bytes:
        dev = self.deviation
        if dev is None:
            dev = _DEV_UNSPECIFIED
        elif not isinstance(dev, int) or not -720 <= dev <= 840:
            raise EncodeError(f"deviation {dev!r} is not in -720..840 minutes")
        return _DT.pack(
            _wire(self.year, 0xFFFF, "year", 0xFFFE),
            _wire(self.month, 0xFF, "month", 0xFE),
            _wire(self.day, 0xFF, "day", 0xFE),
            _wire(self.weekday, 0xFF, "weekday", 0xFE),
            _wire(self.hour, 0xFF, "hour", 0xFE),
            _wire(self.minute, 0xFF, "minute", 0xFE),
            _wire(self.second, 0xFF, "second", 0xFE),
            _wire(self.hundredths, 0xFF, "hundredths", 0xFE),
            dev,
            _wire(self.status, 0xFF, "clock status", 0xFE),
        )

    @property
    def date(self) -> CosemDate:
        return CosemDate(self.year, self.month, self.day, self.weekday)

    @property
    def time(self) -> CosemTime:
        return CosemTime(self.hour, self.minute, self.second, self.hundredths)

    def utc_offset(self, *, inverted_deviation: bool = False) -> _dt.timedelta | None:
        """The offset of local time from UTC (CET: +1 h), or None when not specified."""
        if self.deviation is None:
            return None
        minutes = self.deviation if inverted_deviation else -self.deviation
        return _dt.timedelta(minutes=minutes)

    def to_datetime(self, *, inverted_deviation: bool = False) -> _dt.datetime:
        """An aware datetime when the deviation is given, a naive (local) one otherwise."""
        offset = self.utc_offset(inverted_deviation=inverted_deviation)
        try:
            tz = None if offset is None else _dt.timezone(offset)
            given = _specified(self.year, self.month, self.day, self.hour, self.minute)
            year, month, day, hour, minute = given
            return _dt.datetime(
                year,
                month,
                day,
                hour,
                minute,
                self.second or 0,
                (self.hundredths or 0) * 10_000,
                tzinfo=tz,
            )
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"{self} is not a point in time") from exc

    @classmethod
    def from_datetime(
        cls, value: _dt.datetime, *, inverted_deviation: bool = False, status: int | None = 0
    ) -> CosemDateTime:
        """From a datetime; an aware one sets the deviation, a naive one leaves it unspecified.
        A given ``status`` gets bit 7, daylight_saving_active, when the datetime's zone is in
        summer time (``dst()``), as the deviation then says (Blue Book clock_status)."""
        offset = value.utcoffset()
        deviation = None
        if offset is not None:
            minutes = int(offset.total_seconds() // 60)
            deviation = minutes if inverted_deviation else -minutes
        if status is not None and value.dst():
            status |= DAYLIGHT_SAVING_ACTIVE
        return cls(
            value.year,
            value.month,
            value.day,
            value.isoweekday(),
            value.hour,
            value.minute,
            value.second,
            value.microsecond // 10_000,
            deviation,
            status,
        )
