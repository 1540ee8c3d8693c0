"""A profile's read plan: which items a session reads, and a plan a profile gets wrong."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from sac.errors import PluginError
from sac.profiles import MeterProfile, discover_profiles, ref
from sac.profiles.readplan import UNI_TS_PLAN, PlanItem, PlanState, ReadKind, due_items

NOW = dt.datetime(2026, 12, 3, 10, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
REGISTRY = discover_profiles().registry


def names(items: list[PlanItem]) -> list[str]:
    return [item.quantity for item in items]


def test_a_meter_never_read_is_due_everything_in_the_plans_order() -> None:
    assert names(due_items(UNI_TS_PLAN, {}, NOW)) == [item.quantity for item in UNI_TS_PLAN]
    assert names(due_items(UNI_TS_PLAN, {}, NOW))[:2] == ["battery_autonomy", "current_diagnostic"]


def test_an_item_read_within_its_period_waits_unless_its_counter_moved() -> None:
    fresh = {item.quantity: PlanState(NOW - HOUR, counter=7) for item in UNI_TS_PLAN}
    assert due_items(UNI_TS_PLAN, fresh, NOW) == []
    assert due_items(UNI_TS_PLAN, fresh, NOW, {"event_counter": 7}) == []
    assert names(due_items(UNI_TS_PLAN, fresh, NOW, {"event_counter": 8})) == ["event_logbook"]
    stale = dict(fresh, battery_autonomy=PlanState(NOW - 22 * HOUR))  # a daily push, early
    assert names(due_items(UNI_TS_PLAN, stale, NOW)) == ["battery_autonomy"]
    weekly = dict(fresh, parameter_logbook=PlanState(NOW - 6 * 24 * HOUR))
    assert due_items(UNI_TS_PLAN, weekly, NOW) == []


def test_every_shipped_profile_has_a_plan_its_objects_can_serve() -> None:
    for profile in REGISTRY.profiles.values():
        assert profile.read_plan, profile.name
        for item in profile.read_plan:
            assert item.quantity in profile.objects, (profile.name, item.quantity)


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        (PlanItem("no_such_thing", HOUR), "'no_such_thing' is not in its objects"),
        (PlanItem("battery_autonomy", HOUR, ReadKind.SINCE_LAST), "is not IC 7"),
        (PlanItem("event_logbook", HOUR, when_moved="door_counter"), "'door_counter' is not"),
        (PlanItem("clock", -HOUR), "negative"),
    ],
)
def test_a_plan_a_profile_gets_wrong_is_named(item: PlanItem, problem: str) -> None:
    generic = REGISTRY.profiles["uni-ts-11291-12-2"]
    assert isinstance(generic, MeterProfile)
    broken = dataclasses.replace(generic, name="broken", read_plan=(item,))
    with pytest.raises(PluginError, match=problem):
        broken.validate()
    objects = dict(generic.objects, door_counter=ref(1, "0.0.96.15.9.255"))
    if item.when_moved == "door_counter":
        dataclasses.replace(broken, objects=objects).validate()  # declared: fine
