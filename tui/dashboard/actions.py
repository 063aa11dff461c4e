"""What the dashboard's write actions do to the job database (queue, cancel, retry) or the
disk (export), each in one call that returns the line the dashboard shows; no Textual here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffbench.storage import queue
from diffbench.storage.db import Database, StorageError


def perform(db: Database, action: str, payload: Any) -> str:
    """Carry out ``action`` (queue: specs; cancel, retry: run ids; export: (path, ids))."""
    if action == "queue":
        result = queue.enqueue(db, payload)
        skipped = f", skipped {len(result.skipped)} duplicate(s)" if result.skipped else ""
        return f"queued {len(result.ids)} run(s) {list(result.ids)}{skipped}"
    if action == "cancel":
        outcome = queue.cancel(db, payload)
        return "; ".join(f"#{i} {what}" for i, what in outcome.items())
    if action == "retry":
        return f"requeued {', '.join(f'#{i}' for i in queue.retry(db, payload))}"
    path, ids = payload
    return export_csv(db, path, ids)


def export_csv(db: Database, path: Path, ids: list[int]) -> str:
    """The runs ``ids`` as `diffbench runs export` writes them (same columns)."""
    from ..study.export import columns, run_row, write_csv

    rows = [run_row(r) for r in queue.list_runs(db, ids=ids)]
    try:
        write_csv(path, columns(rows), rows)
    except OSError as error:
        raise StorageError(f"cannot write {path}: {error.strerror or error}") from None
    return f"exported {len(rows)} runs to {path}"
