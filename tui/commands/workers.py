"""`diffbench workers ls`: the worker processes the job database has heard of, with their
host and, for workers of `diffbench slurm submit`, their Slurm job (``<array job>_<task>``).

A worker is *alive* while it has not stopped and its last heartbeat (stamped by the
database clock) is within ``--grace`` seconds; a worker killed without a goodbye shows as
dead once its heartbeats stop, and its run goes back to the queue when its lease expires.

Load: the latest sample its heartbeats carried (GPU utilisation, memory, temperature; the
host's CPU % and RAM), with a sparkline of the kept ones in the table; ``--json`` gives the
latest as ``load`` (null before the first; a null field: that sensor is absent).
"""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import require, user_errors
from ..output import JsonOption, database, print_json, print_table

app = typer.Typer(help="The worker processes of the job database.", no_args_is_help=True)


@app.command("ls")
def ls(
    ctx: typer.Context,
    grace: Annotated[float, typer.Option(
        "--grace", metavar="SECONDS",
        help="A worker whose last heartbeat is older than this counts as dead.")] = 60.0,
    json_: JsonOption = False,
) -> None:
    """List live and dead workers with their host, Slurm job, pid, device, last heartbeat and
    load (GPU utilisation, memory and temperature, CPU and RAM).

    [bold]Examples[/]

      diffbench workers ls
      diffbench workers ls --json --grace 30
    """
    with user_errors():
        require(grace > 0, f"--grace must be positive, got {grace}")
    _ls(ctx, grace, as_json=json_)


def _ls(ctx: typer.Context, grace: float, *, as_json: bool) -> None:
    from diffbench.storage import workers

    from ..load import COLUMNS, load_cells, load_dict

    with database(ctx) as db:
        found, now = workers.list_workers(db), workers.database_now(db)
        history = workers.load_history(db)
    rows = [{"id": w.id, "state": _state(w, now, grace), "host": w.host,
             "slurm_job": w.slurm_job, "pid": w.pid, "device": w.device,
             "started_at": w.started_at, "heartbeat_at": w.heartbeat_at,
             "seconds_since_heartbeat": round((now - w.heartbeat_at).total_seconds(), 1),
             "stopped_at": w.stopped_at,
             "load": load_dict(history[w.id][-1] if history.get(w.id) else None)}
            for w in found]
    if as_json:
        print_json(rows)
        return
    shown = ["id", "state", "host", "pid", "device", "heartbeat_at", "seconds_since_heartbeat"]
    if any(r["slurm_job"] for r in rows):  # a column only where some worker ran in Slurm
        shown.insert(3, "slurm_job")
    print_table([*shown, *COLUMNS],
                [[r[c] for c in shown] + list(load_cells(history.get(r["id"], ()), r["device"]))
                 for r in rows])


def _state(worker, now, grace: float) -> str:
    if worker.stopped_at is not None:
        return "stopped"
    return "alive" if worker.alive(now, grace) else "dead"
