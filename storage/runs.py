"""The queue's values: what to train (`RunSpec`), a run as stored (`Run`), and what
`enqueue` and `heartbeat` answer. Frozen and detached from the database."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from diffbench.storage.schema import RunRow, identity
from diffbench.storage.states import Status


@dataclass(frozen=True)
class RunSpec:
    """What to train: the input of `enqueue`. ``epochs`` None means the preset's."""

    preset: str
    optimizer: str
    schedule: str
    lr: float
    weight_decay: float
    seed: int
    epochs: int | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)  # --set key=value
    config: Mapping[str, Any] | None = None  # RunConfig.to_dict(), resolved
    priority: int = 0
    tags: tuple[str, ...] = ()

    @property
    def identity(self) -> str:
        return identity(self.preset, self.optimizer, self.schedule, self.lr,
                        self.weight_decay, self.seed, self.epochs, dict(self.overrides))


@dataclass(frozen=True)
class Run:
    """A row of the job table, detached from the database."""

    id: int
    status: Status
    priority: int
    preset: str
    optimizer: str
    schedule: str
    lr: float
    weight_decay: float
    seed: int
    epochs: int | None
    overrides: dict[str, Any]
    identity: str
    tags: tuple[str, ...]
    config: dict[str, Any] | None
    attempts: int
    worker_id: int | None
    heartbeat_at: dt.datetime | None
    lease_expires_at: dt.datetime | None
    cancel_requested: bool
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    steps_done: int
    checkpoint: str | None
    provenance: dict[str, Any] | None
    summary: dict[str, Any] | None
    error: str | None
    traceback: str | None

    @property
    def loss_bins(self) -> list[float] | None:
        """Edges of the t-bins of its per-bin losses: the summary's, else (while it runs) the
        provenance's; None for runs from before the bins were measured."""
        return (self.summary or {}).get("loss_bins") or (self.provenance or {}).get("loss_bins")

    @property
    def device(self) -> str | None:
        """What it trained on: the GPU's name, else the torch device (None before a worker
        recorded its provenance)."""
        return device_of(self.provenance)

    @classmethod
    def from_row(cls, row: RunRow) -> Run:
        values = {f: getattr(row, f) for f in cls.__dataclass_fields__}
        values["status"] = Status(row.status)
        values["tags"] = tuple(row.tags or ())
        values["overrides"] = dict(row.overrides or {})
        return cls(**values)


@dataclass(frozen=True)
class EnqueueResult:
    """New run ids (in the order given) and the specs skipped as duplicates, each with the
    id of the run it duplicates (an earlier spec of the same call has its new id)."""

    ids: tuple[int, ...]
    skipped: tuple[tuple[RunSpec, int], ...]


@dataclass(frozen=True)
class Lease:
    """What a heartbeat learned: ``lost`` (the run is no longer this worker's: stop without
    writing), ``cancel_requested`` (finish it as cancelled at the next step)."""

    lost: bool
    cancel_requested: bool
    expires_at: dt.datetime | None


def device_of(provenance: Mapping[str, Any] | None) -> str | None:
    """The device a run's provenance names: the GPU's name, else the torch device."""
    device = (provenance or {}).get("device_name") or (provenance or {}).get("device")
    return str(device) if device else None
