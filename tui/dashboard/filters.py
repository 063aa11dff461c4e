"""The runs table's `/` filter and its sort keys (no Textual here).

Filter syntax: space-separated terms, all of which must match (AND).

* ``key:value`` matches a field; ``value`` may list alternatives with commas (OR):
  ``status:running,queued``, ``opt:muon``, ``sched:cosine``, ``seed:0``, ``preset:tiny``,
  ``id:12``, ``device:cpu``. Text fields match by prefix, numbers exactly.
* any other word matches as a substring of the id, status, optimizer, schedule or preset.

Keys: status (s), optimizer (opt, o), schedule (sched), preset, seed, id, device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .state import RunView

KEYS: dict[str, str] = {
    "status": "status", "s": "status", "optimizer": "optimizer", "opt": "optimizer",
    "o": "optimizer", "schedule": "schedule", "sched": "schedule", "preset": "preset",
    "seed": "seed", "id": "id", "device": "device",
}
NUMERIC = ("seed", "id")


class FilterError(ValueError):
    """A filter the user typed cannot be read; the message says why."""


@dataclass(frozen=True)
class RunFilter:
    fields: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (field, alternatives)
    words: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.fields or self.words)

    def matches(self, run: RunView) -> bool:
        for name, options in self.fields:
            value = getattr(run, name)
            if name in NUMERIC:
                if str(value) not in options:
                    return False
            elif not any(str(value or "").lower().startswith(o) for o in options):
                return False
        text = f"{run.id} {run.status} {run.optimizer} {run.schedule} {run.preset}".lower()
        return all(word in text for word in self.words)


def parse_filter(text: str) -> RunFilter:
    """``status:running opt:muon`` → a `RunFilter`; `FilterError` on an unknown key, an
    empty value or a non-integer seed or id."""
    fields, words = [], []
    for term in text.lower().split():
        key, colon, value = term.partition(":")
        if not colon:
            words.append(term)
            continue
        if key not in KEYS:
            raise FilterError(f"unknown filter key {key!r}; known: "
                              "status, opt, sched, preset, seed, id, device")
        options = tuple(v for v in value.split(",") if v)
        if not options:
            raise FilterError(f"{key}: needs a value, e.g. {key}:{_example(KEYS[key])}")
        name = KEYS[key]
        if name in NUMERIC and not all(o.isdigit() for o in options):
            raise FilterError(f"{key}: takes whole numbers, got {value!r}")
        fields.append((name, options))
    return RunFilter(tuple(fields), tuple(words))


def _example(name: str) -> str:
    return {"status": "running", "optimizer": "muon", "schedule": "cosine", "seed": "0",
            "id": "12", "preset": "tiny", "device": "cpu"}[name]


# ----------------------------------------------------------------------------- sorting

#: Table columns: (key, title). The key names a sort order in `SORT_KEYS`.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "id"), ("status", "status"), ("optimizer", "optimizer"),
    ("schedule", "schedule"), ("lr", "lr"), ("wd", "wd"), ("seed", "seed"),
    ("progress", "progress"), ("train", "train"), ("valid", "valid"),
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
    "valid": lambda r: r.valid_loss,
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
