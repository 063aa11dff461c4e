"""The run filter grammar of `diffbench report` and `diffbench runs`: ``key:value`` terms,
values of one key alternatives, different keys all required (docs/REPORT.md "Filters")."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from diffbench.storage.states import Status

if TYPE_CHECKING:
    from diffbench.storage.queue import Run

FILTER_KEYS = {"preset": "preset", "opt": "optimizer", "optimizer": "optimizer",
               "schedule": "schedule", "tag": "tags", "status": "status"}


class FilterError(ValueError):
    """A ``--filter`` term the report cannot read; the message names it."""


@dataclass(frozen=True)
class RunFilter:
    """``key:value`` terms: values of one key are alternatives (``opt:adamw,muon`` or the
    term repeated), different keys must all hold."""

    terms: dict[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, terms: Iterable[str]) -> RunFilter:
        wanted: dict[str, set[str]] = defaultdict(set)
        for term in terms:
            key, colon, value = term.partition(":")
            key = key.strip().lower()
            values = {v.strip() for v in value.split(",") if v.strip()}
            if not colon or not values:
                raise FilterError(f"--filter {term!r}: write key:value, e.g. opt:muon")
            if key not in FILTER_KEYS:
                raise FilterError(f"--filter {term!r}: unknown key {key!r}; known: "
                                  f"{', '.join(sorted(FILTER_KEYS))}")
            if key == "status":
                bad = sorted(values - {s.value for s in Status})
                if bad:
                    raise FilterError(f"--filter {term!r}: unknown status {bad[0]!r}; known: "
                                      f"{', '.join(s.value for s in Status)}")
            wanted[FILTER_KEYS[key]] |= values
        return cls({k: frozenset(v) for k, v in wanted.items()})

    def matches(self, run: Run) -> bool:
        for attribute, values in self.terms.items():
            if attribute == "tags":
                if not values & set(run.tags):
                    return False
            elif attribute == "status":
                if run.status.value not in values:
                    return False
            elif getattr(run, attribute) not in values:
                return False
        return True

    def __str__(self) -> str:
        return " ".join(f"{k}:{','.join(sorted(v))}" for k, v in sorted(self.terms.items()))
