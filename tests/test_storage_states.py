"""The state machine: the table, and the queue refusing what it does not allow."""

from __future__ import annotations

import pytest

from diffbench.storage import states
from diffbench.storage.db import StorageError
from diffbench.storage.states import IllegalTransition, Status


@pytest.mark.parametrize(("source", "target"), [
    ("queued", "running"), ("queued", "cancelled"), ("running", "done"),
    ("running", "failed"), ("running", "diverged"), ("running", "cancelled"),
    ("running", "queued"), ("failed", "queued"), ("cancelled", "queued"),
    ("diverged", "queued"),
])
def test_allowed(source, target):
    states.check_transition(source, target)


@pytest.mark.parametrize(("source", "target"), [
    ("queued", "done"), ("queued", "failed"), ("done", "queued"), ("done", "running"),
    ("failed", "running"), ("cancelled", "done"), ("diverged", "running"),
    ("queued", "queued"),
])
def test_refused(source, target):
    assert not states.can_transition(source, target)
    with pytest.raises(IllegalTransition, match=f"from {source} to {target}"):
        states.check_transition(source, target, run_id=7)


def test_derived_sets():
    assert all(not states.TRANSITIONS[s] - {Status.QUEUED} for s in states.FINAL)


def test_unknown_status():
    with pytest.raises(StorageError, match="unknown status 'finished'"):
        states.status("finished")
