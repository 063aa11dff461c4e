"""The runs table's columns and sort orders (no Textual here); its `/` filter is the
project's one grammar, `storage.filters.RunFilter`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .state import RunView

#: The validation column shows the fixed-noise loss (fixed t and ε per validation sample),
#: the one the report ranks by and comparable across runs, not the stochastic one.
VALID_TITLE = "valid fixed-ε"

#: Table columns: (key, title). The key names a sort order in `SORT_KEYS`.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "id"), ("status", "status"), ("optimizer", "optimizer"),
    ("schedule", "schedule"), ("lr", "lr"), ("wd", "wd"), ("seed", "seed"),
    ("progress", "progress"), ("train", "train"), ("valid", VALID_TITLE),
    ("ms", "ms/step"), ("eta", "ETA"),
)
STATUS_ORDER = ("running", "queued", "failed", "diverged", "done", "cancelled")

SORT_KEYS: dict[str, Callable[[RunView], Any]] = {
    "id": lambda r: r.id,
    "status": lambda r: STATUS_ORDER.index(r.status),
    "optimizer": lambda r: r.optimizer,
    "schedule": lambda r: r.schedule,
    "lr": lambda r: r.lr,
    "wd": lambda r: r.wd,
    "seed": lambda r: r.seed,
    "progress": lambda r: r.progress,
    "train": lambda r: r.train_loss,
    "valid": lambda r: r.fixed_valid_loss,
    "ms": lambda r: r.ms_per_step,
    "eta": lambda r: r.eta_s,
}


def sort_runs(runs: Sequence[RunView], column: str, *, reverse: bool = False
              ) -> list[RunView]:
    """Runs ordered by ``column`` (ties by id); unknown values (None, NaN) always last."""
    key = SORT_KEYS[column]

    def known(run: RunView) -> bool:
        value = key(run)
        return value is not None and value == value  # NaN != NaN

    present = sorted((r for r in runs if known(r)), key=lambda r: (key(r), r.id),
                     reverse=reverse)
    return present + sorted((r for r in runs if not known(r)), key=lambda r: r.id)
