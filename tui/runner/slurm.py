"""Workers as a Slurm job array through submitit: what `diffbench slurm submit / ls / cancel`
do, without Typer.

::

    submit   Request (checked) → SQLite rule (sinfo) → submitit.SlurmExecutor(<home>/slurm/%A)
             .map_array(WorkerJob, range(N)): one array job, one worker per task, each on the
             shared database and workspace (`slurm_job.py` is what runs in a task);
             <home>/slurm/<job>/diffbench.json records it, beside submitit's logs and pickles
    ls       the recorded jobs' tasks, as squeue sees them (gone from squeue: "ended")
    cancel   scancel of the recorded jobs still known to Slurm: each worker gets SIGTERM,
             checkpoints and puts its run back in the queue

SQLite is one host's database (`storage.hosts`): with a SQLite URL, more than one worker
must be pinned to one node (``nodelist`` naming one node, or a partition of one node).
Slurm's command-line tools are called with `subprocess`; submitit is imported only to
submit.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffbench.storage import hosts

from .slurm_job import WorkerJob, WorkerSettings

RECORD = "diffbench.json"  # in <home>/slurm/<job id>/
#: sbatch options that have their own flag here, and those diffbench sets itself.
OWN_FLAGS = {"partition": "--partition", "time": "--time", "account": "--account",
             "qos": "--qos", "mem": "--mem", "cpus-per-task": "--cpus",
             "gpus-per-node": "--gpus", "gpus": "--gpus", "nodelist": "--nodelist",
             "job-name": "--job-name", "signal": "--signal-delay"}
RESERVED = {"array", "output", "error", "open-mode", "nodes", "ntasks", "ntasks-per-node",
            "wrap"}


class SlurmError(Exception):
    """A Slurm request that cannot be made, or a Slurm tool that failed; one line."""


# ----------------------------------------------------------------------------- the request


@dataclass(frozen=True)
class Request:
    """What to ask Slurm for: ``workers`` array tasks, each one worker on one node."""

    workers: int
    time_min: int = 240
    partition: str | None = None
    gpus: int = 0
    cpus: int | None = None
    mem: str | None = None
    account: str | None = None
    qos: str | None = None
    nodelist: str | None = None
    sbatch: dict[str, Any] = field(default_factory=dict)
    setup: tuple[str, ...] = ()
    signal_delay_s: int = 90
    max_requeues: int = 20
    job_name: str = "diffbench"

    def parameters(self) -> dict[str, Any]:
        """submitit's `SlurmExecutor` parameters (its names for sbatch's options)."""
        params: dict[str, Any] = {
            "job_name": self.job_name, "time": self.time_min, "nodes": 1,
            "signal_delay_s": self.signal_delay_s, "array_parallelism": self.workers,
            "additional_parameters": dict(self.sbatch)}
        optional = {"partition": self.partition, "cpus_per_task": self.cpus,
                    "gpus_per_node": self.gpus or None, "mem": self.mem,
                    "account": self.account, "qos": self.qos, "nodelist": self.nodelist,
                    "setup": list(self.setup) or None}
        params.update({k: v for k, v in optional.items() if v is not None})
        return params


def parse_time(text: str) -> int:
    """sbatch's ``--time`` forms (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) as whole minutes."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise SlurmError(f"--time takes MINUTES, HH:MM:SS or D-HH:MM:SS, got {text!r}")
    days, a, b, c = (int(g) if g is not None else None for g in match.groups())
    if days is not None:  # D-H, D-H:M, D-H:M:S
        seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # H:M:S
        seconds = a * 3600 + b * 60 + c
    elif b is not None:  # M:S
        seconds = a * 60 + b
    else:
        seconds = a * 60
    if seconds <= 0:
        raise SlurmError(f"--time must be positive, got {text!r}")
    return -(-seconds // 60)


def parse_mem(text: str) -> str:
    """sbatch's ``--mem`` (an integer with an optional K, M, G or T; M by default)."""
    if not re.fullmatch(r"\d+[KMGT]?B?", text.strip().upper()):
        raise SlurmError(f"--mem takes a size such as 16G or 4000M, got {text!r}")
    return text.strip().upper().removesuffix("B")


def parse_sbatch(items: list[str] | None) -> dict[str, Any]:
    """``--sbatch KEY=VALUE`` (or a bare ``KEY`` flag) as sbatch options; keys that have
    their own flag here, or that diffbench sets itself, are refused naming why."""
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().removeprefix("--").replace("_", "-")
        if not re.fullmatch(r"[a-z][a-z0-9-]*", key):
            raise SlurmError(f"--sbatch takes KEY=VALUE with an sbatch long option as KEY "
                             f"(e.g. constraint=a100), got {item!r}")
        if key in OWN_FLAGS:
            raise SlurmError(f"--sbatch {key}: use {OWN_FLAGS[key]} instead")
        if key in RESERVED:
            raise SlurmError(f"--sbatch {key}: diffbench sets it (one worker per array task, "
                             f"its logs in <home>/slurm/)")
        if sep and not value.strip():
            raise SlurmError(f"--sbatch {key}= has no value")
        options[key] = value.strip() if sep else True
    return options


def single_node(nodelist: str | None) -> bool:
    """Whether ``nodelist`` names exactly one node (no list, no range)."""
    return bool(nodelist) and re.fullmatch(r"[A-Za-z0-9._-]+", nodelist or "") is not None


# ----------------------------------------------------------------------------- Slurm's tools


def _tool(*args: str, timeout: float = 60) -> str:
    """A Slurm command's stdout; `SlurmError` with its message if missing or failing."""
    if shutil.which(args[0]) is None:
        raise SlurmError(f"{args[0]} not found: diffbench slurm needs Slurm's commands "
                         f"(run it on a login node of the cluster)")
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{args[0]} did not answer in {timeout:g} s") from None
    if done.returncode != 0:
        said = [line.strip() for line in (done.stderr or done.stdout).splitlines()]
        message = next((line for line in reversed(said) if line), f"exit {done.returncode}")
        raise SlurmError(f"{' '.join(args[:2])} failed: {message}")
    return done.stdout


def partition_nodes(partition: str | None) -> list[str]:
    """The nodes of ``partition`` (None: the default partition), from sinfo."""
    rows = [line.split() for line in _tool("sinfo", "-h", "-N", "-o", "%N %P").splitlines()]
    if partition is None:
        rows = [r for r in rows if len(r) == 2 and r[1].endswith("*")]
    else:
        rows = [r for r in rows if len(r) == 2 and r[1].rstrip("*") == partition]
    return sorted({r[0] for r in rows})


def check_sqlite(url: str, request: Request) -> None:
    """Refuse a SQLite database for workers that may run on more than one node at once."""
    if not hosts.is_sqlite(url) or request.workers == 1 or single_node(request.nodelist):
        return
    where = f"partition {request.partition}" if request.partition else "the default partition"
    hint = (f"pin the workers to one node with --nodelist NODE (SQLite then works), or "
            f"{hosts.PG_HINT}")
    if request.nodelist:
        raise SlurmError(f"--nodelist {request.nodelist} names several nodes, and SQLite "
                         f"cannot be shared between hosts: {hint}")
    try:
        nodes = partition_nodes(request.partition)
    except SlurmError as error:
        raise SlurmError(f"cannot tell which nodes {where} has ({error}); SQLite cannot be "
                         f"shared between hosts: {hint}") from None
    if len(nodes) != 1:
        raise SlurmError(f"{request.workers} workers may run on any of the {len(nodes)} nodes "
                         f"of {where}, and SQLite cannot be shared between hosts: {hint}")


# ----------------------------------------------------------------------------- submit


@dataclass(frozen=True)
class Submission:
    """One submitted array job, as recorded in ``<home>/slurm/<job>/diffbench.json``."""

    job_id: str
    workers: int
    db: str  # password hidden
    home: str
    submitted_at: str
    request: dict[str, Any]
    worker: dict[str, Any]

    @property
    def folder(self) -> Path:
        return Path(self.home) / "slurm" / self.job_id


def _executor(home: Path, request: Request) -> Any:
    import submitit

    executor = submitit.SlurmExecutor(folder=home / "slurm" / "%A",
                                      max_num_timeout=request.max_requeues)
    executor.update_parameters(**request.parameters())
    return executor


def script(home: Path, url: str, request: Request) -> str:
    """The sbatch script submitit would write (``--dry-run``); no Slurm needed."""
    import shlex
    import sys

    from submitit.slurm import slurm as submitit_slurm

    folder = home / "slurm" / "%A"
    command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {folder}"
    return submitit_slurm._make_sbatch_string(command=command, folder=folder,
                                              map_count=request.workers,
                                              **request.parameters())


def submit(home: Path, url: str, request: Request, settings: WorkerSettings) -> Submission:
    """Submit the array (sbatch through submitit) and record it; the job's id."""
    import datetime as dt

    from sqlalchemy.engine import make_url

    _tool("sinfo", "--version")  # Slurm's tools are here (one line, not submitit's error)
    job = WorkerJob(str(home), url, settings)
    try:
        jobs = _executor(home, request).map_array(job, range(request.workers))
    except Exception as error:  # submitit raises its own (sbatch's message inside)
        raise SlurmError(f"sbatch refused the job array: {' '.join(str(error).split())}"
                         ) from None
    job_id = jobs[0].job_id.split("_", 1)[0]
    record = Submission(
        job_id=job_id, workers=request.workers,
        db=make_url(url).render_as_string(hide_password=True), home=str(home),
        submitted_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        request=dataclasses.asdict(request), worker=dataclasses.asdict(settings))
    record.folder.mkdir(parents=True, exist_ok=True)
    (record.folder / RECORD).write_text(json.dumps(dataclasses.asdict(record), indent=2))
    return record


# ----------------------------------------------------------------------------- ls, cancel


def submissions(home: Path) -> list[Submission]:
    """The recorded submissions of this workspace, oldest first."""
    found = []
    for path in (home / "slurm").glob(f"*/{RECORD}"):
        try:
            found.append(Submission(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue  # a half-written or foreign file: not ours to list
    return sorted(found, key=lambda s: (len(s.job_id), s.job_id))


@dataclass(frozen=True)
class Task:
    """An array task as squeue sees it (state "ENDED" once squeue no longer lists it)."""

    job_id: str
    task: str
    state: str
    node: str | None
    elapsed: str | None
    reason: str | None

    @property
    def slurm_job(self) -> str:
        return f"{self.job_id}_{self.task}"


def tasks(records: list[Submission]) -> list[Task]:
    """Every task of ``records``: squeue's view of this user's jobs, the rest ENDED."""
    wanted = {r.job_id: r for r in records}
    seen: dict[tuple[str, str], Task] = {}
    if wanted:
        out = _tool("squeue", "-h", "-r", "--me", "-o", "%i|%T|%N|%M|%r")
        for line in out.splitlines():
            job, state, node, elapsed, reason = (line.split("|") + [""] * 5)[:5]
            base, _, task = job.partition("_")
            task = task or "0"  # a single worker is a plain job, not an array
            if base in wanted and task.isdecimal():
                seen[base, task] = Task(base, task, state, node or None, elapsed or None,
                                        None if reason in ("None", "") else reason)
    for record in wanted.values():
        for index in range(record.workers):
            seen.setdefault((record.job_id, str(index)),
                            Task(record.job_id, str(index), "ENDED", None, None, None))
    return sorted(seen.values(), key=lambda t: (len(t.job_id), t.job_id, int(t.task)))


def cancel(job_ids: list[str]) -> None:
    """scancel the jobs: running workers get SIGTERM (checkpoint, release), pending tasks
    go away."""
    if job_ids:
        _tool("scancel", *job_ids)
