"""The project's names in one torch-free place: optimizers, schedules, precisions, data-set
splits, the ScheduleFree rule, the checks of a learning rate and a weight decay (one
wording for every command and layer), one colour per optimizer (report and dashboard), and
the sample-quality scores with their headers and labels.

Everything that names these reads them here; the registries that implement them
(`optimizers.OPTIMIZERS`, `schedules.SCHEDULES`) are checked against them by the tests, so
adding an optimizer is one entry here and one builder there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd", "muon", "soap", "schedulefree", "prodigy")
#: Optimizers that take no external lr schedule (only their own warm-up): a run of one is
#: "constant" whatever schedule is asked for.
OWN_SCHEDULE: tuple[str, ...] = ("schedulefree",)
SCHEDULES: tuple[str, ...] = ("constant", "linear", "cosine", "wsd", "sqrt", "sqrt-cooldown")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
SPLITS: tuple[str, ...] = ("train", "valid", "test")

#: One colour per optimizer (RGB), light enough for a dark terminal, dark enough on paper.
OPTIMIZER_RGB: dict[str, tuple[int, int, int]] = {
    "adamw": (86, 156, 214), "sgd": (150, 150, 150), "muon": (230, 90, 80),
    "soap": (90, 180, 90), "schedulefree": (240, 160, 40), "prodigy": (190, 110, 215),
}
OTHER_RGB = (120, 120, 120)  # an optimizer without a colour of its own


def optimizer_rgb(name: str) -> tuple[int, int, int]:
    return OPTIMIZER_RGB.get(name, OTHER_RGB)


def optimizer_hex(name: str) -> str:
    """``#rrggbb`` of `optimizer_rgb` (matplotlib, HTML)."""
    return "#{:02x}{:02x}{:02x}".format(*optimizer_rgb(name))


def run_schedule(optimizer: str, schedule: str) -> str:
    """The schedule a run of ``optimizer`` actually follows: its own for `OWN_SCHEDULE`."""
    return "constant" if optimizer in OWN_SCHEDULE else schedule


def unknown(kind: str, name: str, known: tuple[str, ...]) -> str | None:
    """``unknown optimizer 'x'; known: adamw, …`` unless ``name`` is in ``known``."""
    return None if name in known else f"unknown {kind} {name!r}; known: {', '.join(known)}"


def lr_problem(lr: float, name: str = "lr") -> str | None:
    """What is wrong with a peak learning rate called ``name`` where it was given (None:
    nothing)."""
    ok = isinstance(lr, int | float) and math.isfinite(lr) and lr > 0
    return None if ok else f"{name} must be a positive number, got {lr!r}"


def weight_decay_problem(weight_decay: float, name: str = "weight_decay") -> str | None:
    """What is wrong with a weight decay called ``name`` where it was given (None: nothing)."""
    ok = (isinstance(weight_decay, int | float) and math.isfinite(weight_decay)
          and weight_decay >= 0)
    return None if ok else f"{name} must be a non-negative number, got {weight_decay!r}"


@dataclass(frozen=True)
class Score:
    """A sample-quality score (a field of `engine.quality.QualityScores`, docs/QUALITY.md):
    its table header and number format, and its axis label where the report plots it
    against the loss (empty: not plotted)."""

    key: str
    header: str
    format: str
    label: str = ""


#: The scores in the report's order.
QUALITY_SCORES: tuple[Score, ...] = (
    Score("std_ratio", "std ×", ".3g", "velocity std / data's"),
    Score("mean_flow", "mean flow", ".2g", "mean flow (data stds)"),
    Score("spectrum_error", "spectrum", ".3g", "energy-spectrum error (RMS log ratio)"),
    Score("vorticity_w1", "W1", ".3g", "vorticity W1 (data stds)"),
    Score("divergence_ratio", "div ×", ".3g"),
    Score("dynamics_error", "dynamics ×", ".3g", "dynamics error / data's"),
    Score("unstable_fraction", "unstable", ".0%"),
    Score("lag1_autocorrelation", "lag-1 corr", ".3f", "lag-1 autocorrelation"),
    Score("sin4y_amplitude", "sin 4y", ".3g"),
)
