"""Meter keys at rest: wrapping under the master key, binding to their place, rotation."""

from __future__ import annotations

import pickle

import pytest

from sac.errors import ConfigurationError
from sac.keys import KeyUnwrapError, MasterKey, key_place, new_master_key, rewrap, wrapped_by

KEYC = bytes.fromhex("4d5944554d4d59474c4f42414c4b4559")


def test_wrap_and_unwrap() -> None:
    kek = MasterKey.from_text(new_master_key())
    place = key_place("FIO0000012345678", 1, "ek")
    blob = kek.wrap(KEYC, place)
    assert KEYC not in blob and len(blob) == 1 + 8 + 12 + 16 + 16
    assert kek.unwrap(blob, place) == KEYC
    assert wrapped_by(blob) == kek.id_hex
    assert kek.wrap(KEYC, place) != blob  # a fresh nonce each time


def test_a_wrapped_key_is_bound_to_its_place() -> None:
    kek = MasterKey.from_text(new_master_key())
    blob = kek.wrap(KEYC, key_place("FIO0000012345678", 1, "ek"))
    for other in (
        key_place("FIO0000012345679", 1, "ek"),  # another meter's row
        key_place("FIO0000012345678", 3, "ek"),  # another client
        key_place("FIO0000012345678", 1, "ak"),  # another role
    ):
        with pytest.raises(KeyUnwrapError, match="does not open here"):
            kek.unwrap(blob, other)
    damaged = blob[:-1] + bytes((blob[-1] ^ 1,))
    with pytest.raises(KeyUnwrapError):
        kek.unwrap(damaged, key_place("FIO0000012345678", 1, "ek"))


def test_another_master_key_is_named_not_shown() -> None:
    old, new = MasterKey.from_text(new_master_key()), MasterKey.from_text(new_master_key())
    place = key_place("FIO0000012345678", 1, "ek")
    blob = old.wrap(KEYC, place)
    with pytest.raises(KeyUnwrapError) as info:
        new.unwrap(blob, place)
    assert old.id_hex in str(info.value) and new.id_hex in str(info.value)
    assert old.secret.hex() not in str(info.value) and old.secret.hex() not in repr(old)
    rotated = rewrap(old, new, blob, place)
    assert wrapped_by(rotated) == new.id_hex and new.unwrap(rotated, place) == KEYC
    with pytest.raises(TypeError):
        pickle.dumps(old)


@pytest.mark.parametrize("text", ["", "00" * 31, "zz" * 32, "00" * 33])
def test_bad_master_keys_are_configuration_errors(text: str) -> None:
    with pytest.raises(ConfigurationError):
        MasterKey.from_text(text)


def test_master_key_from_environment() -> None:
    text = new_master_key()
    assert MasterKey.from_environment({"SAC_MASTER_KEY": text}) == MasterKey.from_text(text)
    assert MasterKey.from_environment({}) is None
    with pytest.raises(ValueError):
        key_place("FIO0000012345678", 1, "kek")
