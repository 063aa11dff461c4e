r"""Learning-rate schedules (spec §6): the multiplier of the peak lr at one step.

Every schedule is a pure function of ``(step, total, warmup, cooldown)``; the trainer multiplies
each parameter group's ``initial_lr`` by it (`diffbench.engine.optimizers.scale_lr`).

Conventions, with $t$ the step (counted from 0 to $T - 1$), $T$ the total number of steps,
$T_w$ the warm-up steps and $c$ the cooldown fraction:

- **Warm-up** (every schedule): $(t + 1) / T_w$ for $t < T_w$, so the first step already
  moves (multiplier $1/T_w$) and the last warm-up step $t = T_w - 1$ reaches the peak 1.
- After warm-up ($t \ge T_w$), the shape, each equal to 1 at $t = T_w$:

  ==============  ===========================================================
  constant        $1$
  linear          $(T - t) / (T - T_w)$
  cosine          $\tfrac12\,(1 + \cos(\pi (t - T_w) / (T - T_w)))$
  wsd             $1$, then the cooldown from $1$
  sqrt            $\sqrt{T_w / t}$; with $T_w = 0$, $\sqrt{1 / (t + 1)}$
  sqrt-cooldown   sqrt, then the cooldown from sqrt's value at $t_c$
  ==============  ===========================================================

- **Cooldown** (wsd, sqrt-cooldown): from $t_c = \max((1 - c)\,T,\; T_w)$ on, the value
  at $t_c$ times $(T - t) / (T - t_c)$: a linear decay that would reach 0 at $t = T$.
  $t_c$ is a real number (no rounding); the cooldown never starts inside the warm-up.

No schedule returns 0 for a step that is taken: the last step $t = T - 1$ of linear, wsd and
sqrt-cooldown gets $1/(T - T_w)$ or $1/(T - t_c)$ of its start value.
"""

from __future__ import annotations

import math
from collections.abc import Callable


class ScheduleError(ValueError):
    """An unknown schedule or arguments outside their range; the message names them."""


def _constant(t: int, total: int, warmup: int, cooldown: float) -> float:
    return 1.0


def _linear(t: int, total: int, warmup: int, cooldown: float) -> float:
    return (total - t) / (total - warmup)


def _cosine(t: int, total: int, warmup: int, cooldown: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * (t - warmup) / (total - warmup)))


def _sqrt_at(t: float, warmup: int) -> float:
    """Inverse square root, 1 at the first step after warm-up."""
    return math.sqrt(warmup / t) if warmup > 0 else math.sqrt(1.0 / (t + 1))


def _cooled(value_at: Callable[[float], float], t: int, total: int, warmup: int,
            cooldown: float) -> float:
    """`value_at(t)` until t_c = max((1 - c)·T, T_w), then linear from `value_at(t_c)` to 0 at T."""
    start = max((1.0 - cooldown) * total, float(warmup))
    if t < start:
        return value_at(t)
    return value_at(start) * (total - t) / (total - start)


def _wsd(t: int, total: int, warmup: int, cooldown: float) -> float:
    return _cooled(lambda _: 1.0, t, total, warmup, cooldown)


def _sqrt(t: int, total: int, warmup: int, cooldown: float) -> float:
    return _sqrt_at(t, warmup)


def _sqrt_cooldown(t: int, total: int, warmup: int, cooldown: float) -> float:
    return _cooled(lambda s: _sqrt_at(s, warmup), t, total, warmup, cooldown)


# Shape after warm-up, one signature: (step, total, warmup, cooldown) -> multiplier.
_SHAPES: dict[str, Callable[[int, int, int, float], float]] = {
    "constant": _constant,
    "linear": _linear,
    "cosine": _cosine,
    "wsd": _wsd,
    "sqrt": _sqrt,
    "sqrt-cooldown": _sqrt_cooldown,
}

SCHEDULES: tuple[str, ...] = tuple(_SHAPES)


def check_schedule(schedule: str) -> None:
    """Raise `ScheduleError` naming `schedule` unless it is one of `SCHEDULES`."""
    if schedule not in _SHAPES:
        raise ScheduleError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")


def lr_multiplier(schedule: str, step: int, total: int, warmup: int = 0,
                  cooldown: float = 0.2) -> float:
    """Multiplier of the peak lr at `step` (0 … total − 1) of `total`, after `warmup` steps."""
    check_schedule(schedule)
    if total < 1:
        raise ScheduleError(f"total steps must be positive, got {total}")
    if not 0 <= step < total:
        raise ScheduleError(f"step {step} outside [0, {total})")
    if not 0 <= warmup <= total:
        raise ScheduleError(f"warm-up {warmup} outside [0, total = {total}]")
    if not 0.0 <= cooldown <= 1.0:
        raise ScheduleError(f"cooldown fraction {cooldown} outside [0, 1]")
    if step < warmup:
        return (step + 1) / warmup
    return _SHAPES[schedule](step, total, warmup, cooldown)
