"""Hypothesis strategies for sac.dlms values, and a type-aware view for comparing them."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from sac.dlms import Obis
from sac.dlms.axdr import (
    INT_TYPES,
    Array,
    BitString,
    CompactArray,
    Float32,
    Float64,
    OctetString,
    Structure,
    TypeDescription,
    Utf8String,
    VisibleString,
    type_description_of,
)
from sac.dlms.cosemtime import CosemDate, CosemDateTime, CosemTime

obis = st.binary(min_size=6, max_size=6).map(Obis)


def _opt(top: int) -> st.SearchStrategy[int | None]:
    return st.none() | st.integers(0, top)


dates = st.builds(CosemDate, _opt(0xFFFE), _opt(0xFE), _opt(0xFE), _opt(0xFE))
times = st.builds(CosemTime, _opt(0xFE), _opt(0xFE), _opt(0xFE), _opt(0xFE))
date_times = st.builds(
    CosemDateTime,
    _opt(0xFFFE),
    _opt(0xFE),
    _opt(0xFE),
    _opt(0xFE),
    _opt(0xFE),
    _opt(0xFE),
    _opt(0xFE),
    _opt(0xFE),
    st.none() | st.integers(-720, 840),
    _opt(0xFE),
)

integers = st.one_of(*(st.integers(cls.LOW, cls.HIGH).map(cls) for cls in INT_TYPES))
leaves = st.one_of(
    st.none(),
    st.booleans(),
    integers,
    st.floats(width=32, allow_nan=False).map(Float32),
    st.floats(allow_nan=False).map(Float64),
    st.binary(max_size=300).map(OctetString),
    st.text(st.characters(max_codepoint=255), max_size=40).map(VisibleString),
    st.text(max_size=40).map(Utf8String),
    st.text("01", max_size=70).map(BitString),
    dates,
    times,
    date_times,
)


@st.composite
def compact_arrays(draw: st.DrawFn) -> CompactArray:
    """A compact-array of one structure type (or one scalar type) and 0..6 values."""
    template = draw(
        st.one_of(
            integers,
            st.tuples(integers, st.binary(max_size=8).map(OctetString)).map(Structure),
            st.tuples(integers, dates, st.booleans()).map(Structure),
        )
    )
    desc: TypeDescription = type_description_of(template)

    def like(value: Any) -> st.SearchStrategy[Any]:
        if isinstance(value, Structure):
            return st.tuples(*(like(v) for v in value)).map(Structure)
        if isinstance(value, bool):
            return st.booleans()
        if isinstance(value, OctetString):
            return st.binary(max_size=8).map(OctetString)
        if isinstance(value, CosemDate):
            return dates
        cls = type(value)
        return st.integers(cls.LOW, cls.HIGH).map(cls)

    values = draw(st.lists(like(template), max_size=6))
    return CompactArray(desc, tuple(values))


data_values = st.recursive(
    leaves | compact_arrays(),
    lambda children: (
        st.lists(children, max_size=5).map(Array) | st.lists(children, max_size=5).map(Structure)
    ),
    max_leaves=25,
)


def shape(value: Any) -> Any:
    """A view of a value that keeps its DLMS type (tuples compare equal across types)."""
    if isinstance(value, tuple) and not isinstance(value, CompactArray):
        return (type(value).__name__, [shape(v) for v in value])
    if isinstance(value, CompactArray):
        return ("CompactArray", value.element_type, [shape(v) for v in value.values])
    if isinstance(value, float):
        return (type(value).__name__, repr(float(value)))
    return (type(value).__name__, value)
