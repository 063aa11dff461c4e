"""The one run-filter grammar: `diffbench report --filter`, `diffbench runs ls --filter` and
the dashboard's `/` filter read the same terms (docs/REPORT.md "Filters").

Filter syntax: terms separated by spaces (or given as repeated ``--filter`` options); every
term must hold.

* ``key:value`` matches a field. Values are case-insensitive and exact; ``*`` and ``?``
  are wildcards (``preset:paper*``, ``device:*h100*``). Commas give alternatives:
  ``opt:adamw,muon`` (the key repeated does the same).
* any other word matches as a substring of the id, status, optimizer, schedule or preset.

Keys: status (s), optimizer (opt, o), schedule (sched), preset, tag, seed, id, device.
Unknown keys, statuses, optimizers and schedules and non-integer seeds or ids are errors.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from diffbench.engine.vocabulary import OPTIMIZERS, SCHEDULES, unknown
from diffbench.storage.states import Status

if TYPE_CHECKING:
    from diffbench.storage.db import Database
    from diffbench.storage.runs import Run

#: The key a user types → the attribute of the run it reads.
KEYS: dict[str, str] = {
    "status": "status", "s": "status", "optimizer": "optimizer", "opt": "optimizer",
    "o": "optimizer", "schedule": "schedule", "sched": "schedule", "preset": "preset",
    "tag": "tags", "seed": "seed", "id": "id", "device": "device",
}
NUMERIC = ("seed", "id")
#: Attributes whose values must be known names (unless a wildcard stands in them).
NAMED: dict[str, tuple[str, tuple[str, ...]]] = {
    "status": ("status", tuple(s.value for s in Status)),
    "optimizer": ("optimizer", OPTIMIZERS), "schedule": ("schedule", SCHEDULES),
}
WORD_FIELDS = ("id", "status", "optimizer", "schedule", "preset")
EXAMPLES = {"status": "running", "optimizer": "muon", "schedule": "cosine", "seed": "0",
            "id": "12", "preset": "tiny", "device": "cpu", "tags": "baseline"}


class FilterError(ValueError):
    """A filter term that cannot be read; the message names it and says why."""


@dataclass(frozen=True)
class RunFilter:
    """Parsed terms: per attribute its alternative patterns, plus free words. Matches any
    object with the attributes of `KEYS` (`storage.queue.Run`, the dashboard's rows); an
    attribute it lacks or holds None matches no pattern."""

    terms: dict[str, frozenset[str]] = field(default_factory=dict)
    words: tuple[str, ...] = ()

    @classmethod
    def parse(cls, terms: str | Iterable[str]) -> RunFilter:
        """``"status:running opt:muon"`` or ``["opt:adamw,muon", "status:done"]`` → a
        filter; `FilterError` on the first bad term."""
        if isinstance(terms, str):
            terms = [terms]
        wanted: dict[str, set[str]] = defaultdict(set)
        words: list[str] = []
        for term in (t for text in terms for t in text.lower().split()):
            key, colon, value = term.partition(":")
            if not colon:
                words.append(term)
                continue
            if key not in KEYS:
                raise FilterError(f"filter {term!r}: unknown key {key!r}; known: "
                                  f"{', '.join(sorted(KEYS))}")
            name = KEYS[key]
            values = {v for v in value.split(",") if v}
            if not values:
                raise FilterError(f"filter {term!r}: needs a value, e.g. "
                                  f"{key}:{EXAMPLES[name]}")
            if name in NUMERIC and not all(v.isdigit() for v in values):
                raise FilterError(f"filter {term!r}: {key} takes whole numbers")
            if name in NAMED:
                kind, known = NAMED[name]
                for v in sorted(values):
                    problem = None if _wild(v) else unknown(kind, v, known)
                    if problem:
                        raise FilterError(f"filter {term!r}: {problem}")
            wanted[name] |= values
        return cls({k: frozenset(v) for k, v in wanted.items()}, tuple(words))

    def __bool__(self) -> bool:
        return bool(self.terms or self.words)

    def matches(self, run: Any) -> bool:
        for name, patterns in self.terms.items():
            values = getattr(run, name, None)
            values = values if isinstance(values, tuple) else (values,)
            texts = [str(v).lower() for v in values if v is not None]
            if not any(fnmatchcase(t, p) for t in texts for p in patterns):
                return False
        text = " ".join(str(getattr(run, n)) for n in WORD_FIELDS).lower()
        return all(word in text for word in self.words)

    def __str__(self) -> str:
        terms = [f"{_key(k)}:{','.join(sorted(v))}" for k, v in sorted(self.terms.items())]
        return " ".join([*terms, *self.words])


def filtered_runs(db: Database, run_filter: RunFilter | None = None, *,
                  status: Iterable[str] | None = None) -> list[Run]:
    """The runs (by id) in one of the ``status`` states (None: any) that the filter admits."""
    from diffbench.storage.queue import list_runs

    return [r for r in list_runs(db, status=status) if (run_filter or RunFilter()).matches(r)]


def _wild(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _key(name: str) -> str:
    return "tag" if name == "tags" else name
