"""The queue form's validation: the same parsing and checks as `diffbench queue add`
(`tui/study/plan.py`), returning run specs or one message (no Textual here)."""

from __future__ import annotations

from dataclasses import dataclass

from diffbench.engine.vocabulary import lr_problem, weight_decay_problem

from ..errors import UserError
from ..study.plan import Grid, parse_floats, parse_seeds, resolve_specs, split_list


class FormError(ValueError):
    """A field is invalid; the message is the one `queue add` would print."""


@dataclass(frozen=True)
class QueueFields:
    """The form's text fields, as typed (lists comma-separated, seeds like ``0-2``)."""

    preset: str = "tiny"
    optimizers: str = "adamw"
    schedules: str = "linear"
    lrs: str = ""
    wds: str = ""
    seeds: str = "0"
    epochs: str = ""


def specs_from_fields(fields: QueueFields) -> list:
    """The `RunSpec`s `queue add` would queue for these values; `FormError` otherwise."""
    try:
        epochs = fields.epochs.strip()
        if epochs and not epochs.lstrip("-").isdigit():
            raise UserError(f"--epochs must be a whole number, got {epochs!r}")
        grid = Grid(
            preset=fields.preset.strip() or "tiny",
            optimizers=split_list([fields.optimizers]),
            schedules=split_list([fields.schedules]) or ["linear"],
            lrs=parse_floats([fields.lrs], "--lr", lr_problem),
            wds=parse_floats([fields.wds], "--wd", weight_decay_problem),
            seeds=parse_seeds([fields.seeds]) or [0],
            epochs=int(epochs) if epochs else None, sets={}, priority=0, tags=())
        return resolve_specs(grid)
    except UserError as error:
        raise FormError(str(error)) from None
