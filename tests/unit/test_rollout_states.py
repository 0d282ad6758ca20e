"""A rollout's status is one state machine: every action on every status moves it as
rollout.TRANSITIONS says, or is refused (409) naming the status. Walked whole, first as the
table, then through the controller an operator's action reaches."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import routes_yaml

from splitter.config import parse
from splitter.rollout import ACTIONS, TRANSITIONS, Refused, Rollouts, Status, transition
from splitter.runtime import Runtime, Settings

STEPS = "{steps: [10, 50, 100], interval_s: 60, gates: {max_error_rate: 0.5}}"
OPERATOR = ("pause", "resume", "abort", "promote", "restart")


def test_every_status_and_action_moves_as_the_table_says_or_is_refused_naming_the_status():
    moved = refused = 0
    for status in Status:
        for action in ACTIONS:
            expected = TRANSITIONS.get((status, action))
            if expected is not None:
                assert transition("auth", status.value, action) is expected
                moved += 1
            else:
                with pytest.raises(Refused, match=f"rollout of 'auth' is {status.value}: {action} does not apply"):
                    transition("auth", status.value, action)
                refused += 1
    assert moved == len(TRANSITIONS) and moved + refused == len(Status) * len(ACTIONS)


def test_a_stopped_or_finished_rollout_has_no_way_back_to_its_step_but_a_start_over():
    for stopped in (Status.ABORTED, Status.ROLLED_BACK, Status.DONE):
        ways = {a for (s, a) in TRANSITIONS if s is stopped}
        assert ways <= {"resume", "restart"}, (stopped, ways)
        assert "pause" not in ways and "promote" not in ways


def _runtime(tmp_path) -> Runtime:
    text = routes_yaml("http://127.0.0.1:9", "http://127.0.0.1:9", routes=f"""  - name: auth
    prefix: /api/auth
    percent: 0
    rollout: {STEPS}""")
    return Runtime(Settings(config_path=str(tmp_path / "routes.yaml")), parse(text))


async def _act(tmp_path, status: Status, action: str) -> tuple[dict | None, str | None, object]:
    """A rollout at its second step (50 %) in `status`, then `action`: (view, refusal, percent)."""
    rt = _runtime(tmp_path)
    rollouts = Rollouts(rt)
    await rt.overrides.set_percent("auth", 0 if status in (Status.ABORTED, Status.ROLLED_BACK) else 50, source="rollout")
    await rt.overrides.put_rollout("auth", {"status": status.value, "step": 1, "since": time.time(), "reason": ""})
    try:
        view = await rollouts.act("auth", action)
    except Refused as exc:
        return None, str(exc), rt.snapshot.percent["auth"]
    return view, None, rt.snapshot.percent["auth"]


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("action", OPERATOR)
def test_each_operator_action_on_each_status_through_the_controller(tmp_path, status, action):
    view, refusal, percent = asyncio.run(_act(tmp_path, status, action))
    expected = TRANSITIONS.get((status, action))
    if expected is None:
        assert refusal is not None and f"is {status.value}: {action} does not apply" in refusal, refusal
        before = 0 if status in (Status.ABORTED, Status.ROLLED_BACK) else 50
        assert percent == before, "a refused action changes nothing"
        return
    assert refusal is None and view is not None
    assert view["status"] == expected.value, view
    if action == "restart" or (action == "resume" and status in (Status.ABORTED, Status.ROLLED_BACK)):
        assert percent == 10 and view["step"] == 10, "starts over at the first step, never the one it left"
    elif action == "promote":
        assert percent == 100 and view["step"] == 100
    elif action == "abort":
        assert percent == 0
    elif action == "resume":
        assert percent == 50, "a paused rollout goes on at the step it was paused on"


def test_the_bake_is_entered_only_from_running_and_left_only_forward_or_stopped():
    assert {s for (s, a) in TRANSITIONS if a == "bake"} == {Status.RUNNING}
    assert TRANSITIONS[(Status.RUNNING, "bake")] is Status.BAKING
    ways = {a: nxt for (s, a), nxt in TRANSITIONS.items() if s is Status.BAKING}
    assert ways["done"] is Status.DONE and ways["rollback"] is Status.ROLLED_BACK and ways["finish"] is Status.DONE
    assert "advance" not in ways and "await" not in ways and "resume" not in ways


async def _start(tmp_path, steps: str, running: int) -> tuple[dict, object]:
    """A rollout first seen by the driver on a route running at `running` %: (its record, the percent)."""
    text = routes_yaml("http://127.0.0.1:9", "http://127.0.0.1:9", routes=f"""  - name: auth
    prefix: /api/auth
    percent: {running}
    rollout: {{steps: {steps}, interval_s: 60}}""")
    rt = Runtime(Settings(config_path=str(tmp_path / "routes.yaml")), parse(text))
    rollouts = Rollouts(rt)
    await rollouts.tick(rt.snapshot.config.by_name["auth"], time.time())  # writes the record
    await rollouts.tick(rt.snapshot.config.by_name["auth"], time.time())  # starts it
    state = await rt.overrides.get_rollout("auth")
    assert state is not None
    return state, rt.snapshot.percent["auth"]


@pytest.mark.parametrize(("running", "expected"), [(0, 10), (10, 10), (30, 50), (50, 50), (100, 100)])
def test_a_rollout_starts_at_the_first_step_at_or_above_the_running_percent(tmp_path, running, expected):
    state, percent = asyncio.run(_start(tmp_path, "[10, 50, 100]", running))
    assert state["status"] == "running" and [10, 50, 100][state["step"]] == expected and percent == expected


def test_a_rollout_added_to_a_route_above_every_step_is_done_with_the_percent_untouched(tmp_path):
    state, percent = asyncio.run(_start(tmp_path, "[10, 50]", 80))
    assert state["status"] == "done" and percent == 80
    assert state["reason"] == "the route already runs at 80%, above every step"
