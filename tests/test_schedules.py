"""Schedules: every shape at its boundaries against hand values, purity, bad arguments."""

from __future__ import annotations

import math

import pytest

from diffbench.engine.schedules import SCHEDULES, ScheduleError, lr_multiplier

# T = 100 steps, T_w = 10 warm-up steps, c = 0.2 → cooldown from t_c = 80.
T, WARMUP = 100, 10

HAND = {
    # schedule: {step: multiplier}
    "constant": {10: 1.0, 55: 1.0, 99: 1.0},
    "linear": {10: 1.0, 55: 0.5, 99: 1 / 90},
    "cosine": {10: 1.0, 55: 0.5, 99: 0.5 * (1 + math.cos(math.pi * 89 / 90))},
    "wsd": {10: 1.0, 79: 1.0, 80: 1.0, 90: 0.5, 99: 1 / 20},
    "sqrt": {10: 1.0, 40: 0.5, 79: math.sqrt(10 / 79), 99: math.sqrt(10 / 99)},
    "sqrt-cooldown": {10: 1.0, 40: 0.5, 79: math.sqrt(10 / 79), 80: math.sqrt(10 / 80),
                      90: math.sqrt(10 / 80) / 2, 99: math.sqrt(10 / 80) / 20},
}


def test_every_schedule_has_hand_values() -> None:
    assert set(HAND) == set(SCHEDULES)
    assert SCHEDULES == ("constant", "linear", "cosine", "wsd", "sqrt", "sqrt-cooldown")


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_warmup_is_linear_from_one_over_warmup_to_one(schedule: str) -> None:
    assert lr_multiplier(schedule, 0, T, WARMUP) == pytest.approx(0.1)
    assert lr_multiplier(schedule, 4, T, WARMUP) == pytest.approx(0.5)
    assert lr_multiplier(schedule, WARMUP - 1, T, WARMUP) == 1.0


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_boundaries_against_hand_values(schedule: str) -> None:
    for step, expected in HAND[schedule].items():
        got = lr_multiplier(schedule, step, T, WARMUP, cooldown=0.2)
        assert got == pytest.approx(expected, rel=1e-12), (schedule, step)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_positive_and_at_most_one_on_every_step(schedule: str) -> None:
    values = [lr_multiplier(schedule, t, T, WARMUP) for t in range(T)]
    assert all(0 < v <= 1 for v in values)
    assert max(values) == 1.0


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_pure_same_inputs_same_output(schedule: str) -> None:
    first = [lr_multiplier(schedule, t, 37, 3, 0.3) for t in range(37)]
    lr_multiplier("cosine", 5, 1000, 100)  # no hidden state between calls
    assert [lr_multiplier(schedule, t, 37, 3, 0.3) for t in range(37)] == first


def test_no_warmup_starts_at_peak() -> None:
    for schedule in SCHEDULES:
        assert lr_multiplier(schedule, 0, T, 0) == 1.0
    assert lr_multiplier("sqrt", 3, T, 0) == 0.5  # √(1 / (t + 1))
    assert lr_multiplier("linear", 99, T, 0) == 1 / 100


def test_cooldown_starts_at_a_real_step_and_never_inside_warmup() -> None:
    # T = 7, c = 0.2 → t_c = 5.6: step 5 is before, step 6 is 1.4 steps from the end.
    assert lr_multiplier("wsd", 5, 7, 0, 0.2) == 1.0
    assert lr_multiplier("wsd", 6, 7, 0, 0.2) == pytest.approx(1 / 1.4)
    # c = 0.8 of T = 10 would start at 2, inside a warm-up of 5: it starts at 5 instead.
    assert lr_multiplier("wsd", 4, 10, 5, 0.8) == 1.0
    assert lr_multiplier("wsd", 5, 10, 5, 0.8) == 1.0
    assert lr_multiplier("wsd", 9, 10, 5, 0.8) == pytest.approx(1 / 5)
    # No cooldown: wsd is constant and sqrt-cooldown is sqrt.
    assert lr_multiplier("wsd", 99, T, WARMUP, 0.0) == 1.0
    assert lr_multiplier("sqrt-cooldown", 99, T, WARMUP, 0.0) == lr_multiplier(
        "sqrt", 99, T, WARMUP)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ScheduleError, match=r"unknown schedule 'cosin'; known: constant, "):
        lr_multiplier("cosin", 0, T)
    with pytest.raises(ScheduleError, match=r"step 100 outside \[0, 100\)"):
        lr_multiplier("linear", 100, T)
    with pytest.raises(ScheduleError, match="step -1"):
        lr_multiplier("linear", -1, T)
    with pytest.raises(ScheduleError, match="warm-up 101"):
        lr_multiplier("linear", 0, T, 101)
    with pytest.raises(ScheduleError, match=r"cooldown fraction 1\.5"):
        lr_multiplier("wsd", 0, T, 0, 1.5)
    with pytest.raises(ScheduleError, match="total steps must be positive"):
        lr_multiplier("constant", 0, 0)
    assert issubclass(ScheduleError, ValueError)
