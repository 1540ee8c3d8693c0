"""The push session's states table: every state is reached from the first, every path ends
in a clean close, a reset, or the connection gone; a step out of order is a bug, said so."""

from __future__ import annotations

import pytest

from sac.services import push
from sac.services.push import PushSession, State

TRANSITIONS = push._TRANSITIONS
ENDS = {State.ACKNOWLEDGED, State.RESET, State.LEFT}


def test_every_state_is_reached_and_only_the_ends_are_final() -> None:
    reached, todo = {State.AWAITING_PUSH}, [State.AWAITING_PUSH]
    while todo:
        state = todo.pop()
        for (source, _event), target in TRANSITIONS.items():
            if source is state and target not in reached:
                reached.add(target)
                todo.append(target)
    assert reached == set(State)
    assert {source for source, _ in TRANSITIONS} == set(State) - ENDS


def test_a_step_out_of_order_is_refused() -> None:
    session = PushSession(None, None)  # type: ignore[arg-type]  # the table alone
    assert session._go(push._In.PUSHED) is State.STORING
    with pytest.raises(RuntimeError, match="PUSHED in state STORING"):
        session._go(push._In.PUSHED)
