"""Parsing the key CSV: every bad line reported by its number."""

from __future__ import annotations

from sac.store.keycsv import SAMPLE, parse_key_csv

EK = "4D5944554D4D59474C4F42414C4B4559"


def test_the_sample_parses() -> None:
    rows, errors = parse_key_csv(SAMPLE)
    assert errors == [] and [(r.line, r.ldn, r.client_sap) for r in rows] == [
        (2, "FIO0000012345678", 1),
        (3, "FIO0000012345679", 1),
    ]
    assert rows[0].ak is None and rows[1].ak == bytes(range(0xD0, 0xE0))
    assert EK.lower() not in repr(rows[0]).lower()


def test_every_bad_line_is_reported_with_its_number() -> None:
    text = "\n".join(
        [
            "ldn;client;ek;ak",  # Italian spreadsheets separate with ;
            f"FIO0000012345678;1;{EK};",
            f"FIO00000123;1;{EK};",  # 3: short LDN
            "FIO0000012345679;1;XYZ;",  # 4: not hex
            f"FIO0000012345680;1;{EK[:30]};",  # 5: 15 bytes
            f"FIO0000012345678;1;{EK};",  # 6: duplicate of line 2
            f"FIO0000012345678;16;{EK};",  # the Public client: fine
            "",
            f"FIO0000012345681;x;{EK};",  # 9: client not a number
            f"FIO0000012345682;1;{EK};{EK};extra",  # 10: too many fields
            f"FIO0000012345683;;{EK};{EK[:4]}",  # 11: AK too short
        ]
    )
    rows, errors = parse_key_csv(text)
    assert [(r.line, r.client_sap) for r in rows] == [(2, 1), (7, 16)]
    assert [(e.line, e.reason.split()[0]) for e in errors] == [
        (3, "LDN"),
        (4, "EK"),
        (5, "EK"),
        (6, "FIO0000012345678"),
        (9, "client"),
        (10, "5"),
        (11, "AK"),
    ]
    assert "already on line 2" in str(errors[3]) and str(errors[0]).startswith("line 3:")


def test_header_problems() -> None:
    for text in ("", "ldn,key\nx,y", "meter,ek\n"):
        rows, errors = parse_key_csv(text)
        assert rows == [] and errors[0].line == 1
