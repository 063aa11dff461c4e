"""`diffbench slurm …`: workers as a Slurm job array (`tui/runner/slurm.py`, through submitit).

`submit` checks every option before anything else (bad input exits 2 with one line and
submits nothing), opens the database (so a bad URL fails here, not in N jobs), applies the
SQLite rule (one node, or PostgreSQL) and submits one array job of ``--workers`` tasks,
each a `diffbench worker` on the shared database and workspace. `ls` and `cancel` act on
the jobs recorded under ``<home>/slurm/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import require, user_errors
from ..output import DB_KEY, JsonOption, notice, print_json, print_table

app = typer.Typer(help="Workers as Slurm job arrays (through submitit): submit, list, cancel.",
                  no_args_is_help=True, rich_markup_mode="rich")


@app.command("submit")
def submit(
    ctx: typer.Context,
    workers: Annotated[int, typer.Option(
        "--workers", "-n", metavar="N", help="Array tasks: one worker each.")] = 1,
    partition: Annotated[str | None, typer.Option(
        "--partition", "-p", help="Slurm partition. Default: the cluster's default.",
        show_default=False)] = None,
    gpus: Annotated[int, typer.Option(
        "--gpus", metavar="N", help="GPUs per worker (sbatch --gpus-per-node).")] = 0,
    cpus: Annotated[int | None, typer.Option(
        "--cpus", metavar="N", help="CPUs per worker (sbatch --cpus-per-task); also the "
        "worker's torch threads unless --threads says otherwise.", show_default=False)] = None,
    mem: Annotated[str | None, typer.Option(
        "--mem", metavar="SIZE", help="Memory per worker, e.g. 32G (sbatch --mem).",
        show_default=False)] = None,
    time: Annotated[str, typer.Option(
        "--time", "-t", metavar="TIME", help="Time limit of each task (MINUTES, HH:MM:SS, "
        "D-HH:MM:SS). Before it, the worker checkpoints, releases its run and the task "
        "requeues itself.")] = "4:00:00",
    account: Annotated[str | None, typer.Option(
        "--account", "-A", help="Slurm account.", show_default=False)] = None,
    qos: Annotated[str | None, typer.Option(
        "--qos", help="Slurm quality of service.", show_default=False)] = None,
    nodelist: Annotated[str | None, typer.Option(
        "--nodelist", "-w", metavar="NODES", help="Only these nodes. With a SQLite "
        "database and several workers: one node, so that every worker shares its host.",
        show_default=False)] = None,
    sbatch: Annotated[list[str] | None, typer.Option(
        "--sbatch", metavar="KEY=VALUE", help="Any other sbatch option, without its dashes "
        "(repeatable): --sbatch constraint=a100 --sbatch exclusive.",
        show_default=False)] = None,
    setup: Annotated[list[str] | None, typer.Option(
        "--setup", metavar="COMMAND", help="A shell line the job runs before the worker "
        "(repeatable), e.g. 'module load cuda'.", show_default=False)] = None,
    signal_delay: Annotated[int, typer.Option(
        "--signal-delay", metavar="SECONDS", help="USR2 this long before the time limit: "
        "time to checkpoint and release.")] = 90,
    max_requeues: Annotated[int, typer.Option(
        "--max-requeues", metavar="N", help="Times a task requeues itself at its time "
        "limit (preemptions do not count).")] = 20,
    job_name: Annotated[str, typer.Option("--job-name", help="Slurm job name.")] = "diffbench",
    device: Annotated[str, typer.Option(
        "--device", "-d", help="Each worker's device: auto (CUDA when present), cpu, cuda "
        "or cuda:N.")] = "auto",
    threads: Annotated[int | None, typer.Option(
        "--threads", metavar="N", help="Each worker's torch threads. Default: --cpus, else "
        "the task's CPUs.", show_default=False)] = None,
    idle_exit: Annotated[float, typer.Option(
        "--idle-exit", metavar="SECONDS", help="A worker exits (its task ends) when the "
        "queue has been empty this long.")] = 600.0,
    max_runs: Annotated[int | None, typer.Option(
        "--max-runs", metavar="N", help="A worker exits after N runs.",
        show_default=False)] = None,
    lease: Annotated[float, typer.Option(
        "--lease", metavar="SECONDS", help="Lease of a claimed run (see diffbench "
        "worker).")] = 60.0,
    max_attempts: Annotated[int, typer.Option(
        "--max-attempts", metavar="N", help="A run that loses its worker N times ends failed "
        "(see diffbench worker); a release on preemption is no loss.")] = 3,
    db_url: Annotated[str | None, typer.Option(
        "--db", metavar="URL", help="Job database every worker uses; also the global --db. "
        "Default: $DIFFBENCH_DB, else <home>/diffbench.db (SQLite: one node).",
        show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the sbatch script instead of submitting it.")] = False,
) -> None:
    """Start workers as one Slurm job array; each trains queued runs until the queue is empty.

    Compute nodes must reach the database and --home (a shared file system).
    SQLite serves one node only: pin it with --nodelist, or use PostgreSQL.
    Before the time limit (and on USR2) a worker checkpoints, puts its run back
    in the queue, and its task requeues itself. Logs: <home>/slurm/<job>/.

    [bold]Examples[/]

      diffbench slurm submit -n 8 -p gpu --gpus 1 --cpus 8 --mem 32G \\
          --time 12:00:00 --db postgresql://me@dbhost/diffbench
      diffbench slurm submit -n 2 --cpus 1 -d cpu --nodelist node07  # SQLite
      diffbench slurm submit -n 4 --gpus 1 -A proj --sbatch constraint=a100
      diffbench slurm submit -n 2 --gpus 1 --dry-run      # print the script
    """
    from diffbench.tui.runner import slurm

    with user_errors(slurm.SlurmError):
        require(workers > 0, f"--workers must be positive, got {workers}")
        require(gpus >= 0, f"--gpus must be 0 or more, got {gpus}")
        require(cpus is None or cpus > 0, f"--cpus must be positive, got {cpus}")
        require(threads is None or threads > 0, f"--threads must be positive, got {threads}")
        require(idle_exit >= 0, f"--idle-exit must be non-negative, got {idle_exit}")
        require(max_runs is None or max_runs > 0, f"--max-runs must be positive, got {max_runs}")
        require(lease > 0, f"--lease must be positive, got {lease}")
        require(max_attempts > 0, f"--max-attempts must be positive, got {max_attempts}")
        require(signal_delay > 0, f"--signal-delay must be positive, got {signal_delay}")
        require(max_requeues >= 0, f"--max-requeues must be 0 or more, got {max_requeues}")
        require(device == "auto" or device == "cpu" or device.startswith("cuda"),
                f"--device takes auto, cpu, cuda or cuda:N, got {device!r}")
        require(not any(s.strip() == "" for s in setup or []), "--setup lines must not be empty")
        time_min = slurm.parse_time(time)
        require(signal_delay < time_min * 60, f"--signal-delay {signal_delay} s does not fit "
                f"in --time {time} ({time_min} min)")
        request = slurm.Request(
            workers=workers, time_min=time_min, partition=partition, gpus=gpus, cpus=cpus,
            mem=slurm.parse_mem(mem) if mem is not None else None, account=account, qos=qos,
            nodelist=nodelist, sbatch=slurm.parse_sbatch(sbatch), setup=tuple(setup or ()),
            signal_delay_s=signal_delay, max_requeues=max_requeues, job_name=job_name)
    settings = slurm.WorkerSettings(device=device, threads=threads or cpus,
                                    idle_exit=idle_exit, max_runs=max_runs, lease_s=lease,
                                    max_attempts=max_attempts)
    home, url = _database(ctx, db_url)
    with user_errors(slurm.SlurmError):
        slurm.check_sqlite(url, request)
    from diffbench.storage.hosts import network_warning

    if warning := network_warning(url):
        notice(f"diffbench: warning: {warning}")
    if dry_run:
        typer.echo(slurm.script(home, url, request))
        return
    with user_errors(slurm.SlurmError):
        record = slurm.submit(home, url, request, settings)
    notice(f"submitted job array {record.job_id}: {workers} worker"
           f"{'s' if workers != 1 else ''} on {record.db}; logs in {record.folder}")
    typer.echo(record.job_id)


def _database(ctx: typer.Context, db_url: str | None) -> tuple[Path, str]:
    """The workspace and the database URL every worker gets (absolute), after opening the
    database once here: a bad URL or an unreachable server fails now, with one line."""
    from diffbench.storage import hosts
    from diffbench.storage.db import StorageError, open_database, resolve_url

    home = ctx.find_root().obj.root
    url = resolve_url(db_url or ctx.find_root().meta.get(DB_KEY), home)
    if (path := hosts.sqlite_file(url)) is not None:
        url = f"sqlite:///{path}"  # a relative file means the same file in every job
    with user_errors(StorageError):
        open_database(url, home=home).dispose()
    return home, url


@app.command("ls")
def ls(ctx: typer.Context, json_: JsonOption = False) -> None:
    """List the job arrays submitted from this workspace and the state of each task.

    [bold]Examples[/]

      diffbench slurm ls
      diffbench slurm ls --json
    """
    from diffbench.tui.runner import slurm

    home = ctx.find_root().obj.root
    records = slurm.submissions(home)
    with user_errors(slurm.SlurmError):
        tasks = slurm.tasks(records)
    rows = [{"job": t.job_id, "task": t.task, "slurm_job": t.slurm_job, "state": t.state,
             "node": t.node, "elapsed": t.elapsed, "reason": t.reason} for t in tasks]
    if json_:
        print_json(rows)
        return
    if not rows:
        notice(f"no Slurm jobs submitted from {home}")
        return
    shown = ["job", "task", "state", "node", "elapsed", "reason"]
    print_table(shown, [[r[c] for c in shown] for r in rows])


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    jobs: Annotated[list[str] | None, typer.Argument(
        metavar="[JOB]...", help="Job ids to cancel. Default: every job of this workspace "
        "that Slurm still knows.", show_default=False)] = None,
) -> None:
    """Cancel this workspace's worker jobs; their runs go back to the queue.

    Running workers get SIGTERM: each checkpoints and puts its run back in the
    queue. Pending tasks are dropped.

    [bold]Examples[/]

      diffbench slurm cancel
      diffbench slurm cancel 4812
    """
    from diffbench.tui.runner import slurm

    home = ctx.find_root().obj.root
    records = {r.job_id: r for r in slurm.submissions(home)}
    with user_errors(slurm.SlurmError):
        unknown = [j for j in jobs or [] if j not in records]
        require(not unknown, f"not a job submitted from {home}: {', '.join(unknown)} "
                f"(diffbench slurm ls lists them)")
        chosen = [records[j] for j in jobs] if jobs else list(records.values())
        live = sorted({t.job_id for t in slurm.tasks(chosen) if t.state != "ENDED"},
                      key=lambda job: (len(job), job))
        slurm.cancel(live)
    notice(f"cancelled {len(live)} job array{'s' if len(live) != 1 else ''}"
           + (f": {', '.join(live)}" if live else " (none was pending or running)"))
