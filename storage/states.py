"""The life of a run, in one table.

::

    queued ──claim──► running ──► done | failed | diverged | cancelled
       │  ▲              │
       │  └──────────────┘  lease expired (worker lost) or interrupted (SIGTERM)
       ▼
    cancelled                       failed | cancelled | diverged ──retry──► queued

``done`` is final. A ``diverged`` run is never retried automatically, only by an explicit
retry. Cancelling a running run does not move it: it sets a flag that the worker sees at
its next heartbeat, and the worker then finishes the run as ``cancelled``.

Every status change in `storage.queue` goes through `check_transition` (or, for the
conditional updates, `sources`), so a new transition is added here and nowhere else.
"""

from __future__ import annotations

from enum import StrEnum

from diffbench.storage.errors import StorageError


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    DIVERGED = "diverged"
    CANCELLED = "cancelled"


TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELLED}),
    Status.RUNNING: frozenset({Status.DONE, Status.FAILED, Status.DIVERGED, Status.CANCELLED,
                               Status.QUEUED}),
    Status.DONE: frozenset(),
    Status.FAILED: frozenset({Status.QUEUED}),
    Status.DIVERGED: frozenset({Status.QUEUED}),
    Status.CANCELLED: frozenset({Status.QUEUED}),
}

#: States a run ends in (a worker's `finish`).
FINAL = frozenset({Status.DONE, Status.FAILED, Status.DIVERGED, Status.CANCELLED})
#: An identical run in one of these states makes a new one a duplicate.
BLOCKS_DUPLICATES = frozenset({Status.QUEUED, Status.RUNNING, Status.DONE})


class IllegalTransition(StorageError):
    """A status change the state machine does not allow."""


def status(value: str | Status) -> Status:
    """``value`` as a `Status`; a `StorageError` naming the known ones if it is none."""
    try:
        return Status(value)
    except ValueError:
        raise StorageError(f"unknown status {value!r}; known: "
                           f"{', '.join(s.value for s in Status)}") from None


def can_transition(source: str | Status, target: str | Status) -> bool:
    return status(target) in TRANSITIONS[status(source)]


def check_transition(source: str | Status, target: str | Status, *, run_id: int | None = None
                     ) -> None:
    """Raise `IllegalTransition` unless ``source → target`` is in the table."""
    if not can_transition(source, target):
        what = f"run {run_id} " if run_id is not None else ""
        raise IllegalTransition(f"{what}cannot go from {status(source).value} "
                                f"to {status(target).value}")

