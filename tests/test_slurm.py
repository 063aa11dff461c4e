"""Workers on Slurm: the workers table's host rule and Slurm job column, `diffbench slurm`'s
command line (nothing submitted), and, where a Slurm cluster is up (`bash .ci/slurm …` sets
DIFFBENCH_TEST_SLURM=1), real job arrays that drain a queue while one of them is preempted."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from diffbench.storage import hosts, migrations, workers
from diffbench.storage.db import Database, create_engine, open_database
from diffbench.tui.cli import app
from tests.postgres_db import fresh_postgres


@pytest.fixture
def runner():
    return CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200", "DIFFBENCH_DB": None,
                          "DIFFBENCH_HOME": None})


# ----------------------------------------------------------------------------- workers table


def test_populated_0003_database_upgrades_to_slurm_jobs(url):
    """A database an older diffbench filled (workers, a finished run, at revision 0003) is
    refused until upgraded; its workers then read back without a Slurm job, new ones keep
    theirs."""
    from alembic import command

    from diffbench.storage import queue as q
    from diffbench.storage.db import SchemaOutdated

    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(migrations._config(connection), "0003")
        worker = connection.execute(sa.text(
            "INSERT INTO workers (host, pid, device, started_at, heartbeat_at) VALUES "
            "('old-host', 7, 'cuda:0', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) RETURNING id")
        ).scalar_one()
    old = Database(engine)
    (run_id,) = q.enqueue(old, [q.RunSpec("tiny", "adamw", "linear", 1e-3, 0.01, 0)]).ids
    q.claim_next(old, worker)
    q.finish(old, run_id, worker, "done", summary={"final_fixed_valid_loss": 0.5})
    engine.dispose()

    with pytest.raises(SchemaOutdated, match=r"0003.*diffbench db upgrade"):
        open_database(url)
    db = open_database(url, upgrade=True)
    try:
        with db.engine.connect() as connection:
            assert migrations.current(connection) == migrations.head() == "0005"
        (before,) = workers.list_workers(db)
        assert (before.host, before.pid, before.device, before.slurm_job) == (
            "old-host", 7, "cuda:0", None)
        assert q.get_run(db, run_id).status == "done"
        new = workers.register_worker(db, host="node1", pid=8, device="cpu",
                                      slurm_job="41_3")
        assert [w.slurm_job for w in workers.list_workers(db)] == [None, "41_3"]
        assert new.slurm_job == "41_3"
    finally:
        db.dispose()


def test_sqlite_refuses_a_second_live_host(tmp_path):
    """On SQLite, ``one_host`` refuses a worker while another host's worker is live (its
    heartbeat within the grace), naming PostgreSQL; the same host, a stopped or silent
    worker of another host, and callers without ``one_host`` pass."""
    db = open_database(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        now = workers.database_now(db)
        other = workers.register_worker(db, host="node-a", pid=1, device="cpu", now=now,
                                        one_host=True)
        workers.register_worker(db, host="node-a", pid=2, device="cpu", now=now,
                                one_host=True)
        with pytest.raises(hosts.SharedSQLite) as refused:
            workers.register_worker(db, host="node-b", pid=3, device="cpu", one_host=True,
                                    now=now + dt.timedelta(seconds=30))
        message = str(refused.value)
        assert "node-a" in message and "PostgreSQL" in message and "\n" not in message
        assert "30 s ago" in message
        workers.register_worker(db, host="node-b", pid=4, device="cpu", now=now)  # not asked
        later = now + dt.timedelta(seconds=hosts.LIVE_GRACE_S + 1)  # node-a's beats are old
        workers.stop_worker(db, 4, now=later)
        assert workers.register_worker(db, host="node-b", pid=5, device="cpu", now=later,
                                       one_host=True).host == "node-b"
        workers.stop_worker(db, other.id, now=now)
    finally:
        db.dispose()


def test_postgres_takes_any_host(tmp_path):
    """The rule is SQLite's: a PostgreSQL database takes workers of any host."""
    with fresh_postgres() as url:
        db = open_database(url)
        try:
            workers.register_worker(db, host="node-a", pid=1, device="cpu", one_host=True)
            workers.register_worker(db, host="node-b", pid=2, device="cpu", one_host=True)
            assert {w.host for w in workers.list_workers(db)} == {"node-a", "node-b"}
        finally:
            db.dispose()


def test_worker_command_refuses_a_sqlite_file_another_host_uses(tmp_path, runner):
    """`diffbench worker` on a SQLite file that a live worker of another host uses exits 2
    with one line naming PostgreSQL, and registers nothing."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    db = open_database(url)
    workers.register_worker(db, host="elsewhere", pid=1, device="cpu")
    db.dispose()
    result = runner.invoke(app, ["--home", str(tmp_path), "worker", "--db", url,
                                 "--device", "cpu", "--idle-exit", "0"])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "PostgreSQL" in result.stderr
    assert "elsewhere" in result.stderr
    db = open_database(url)
    assert [w.host for w in workers.list_workers(db)] == ["elsewhere"]
    db.dispose()


def test_workers_ls_shows_slurm_jobs(tmp_path, runner):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    db = open_database(url)
    workers.register_worker(db, host="node1", pid=11, device="cuda:0", slurm_job="812_0")
    workers.register_worker(db, host="node1", pid=12, device="cpu")
    db.dispose()
    rows = json.loads(runner.invoke(app, ["--db", url, "workers", "ls", "--json"]).stdout)
    assert [(r["host"], r["slurm_job"]) for r in rows] == [("node1", "812_0"), ("node1", None)]
    table = runner.invoke(app, ["--db", url, "workers", "ls"])
    assert table.exit_code == 0 and "slurm_job" in table.stdout and "812_0" in table.stdout


def test_sqlite_on_a_network_file_system_is_warned(tmp_path):
    table = tmp_path / "mounts"
    table.write_text("server:/export /mnt/shared nfs4 rw,relatime 0 0\n"
                     "/dev/vda / ext4 rw 0 0\n")
    warning = hosts.network_warning("sqlite:////mnt/shared/study/diffbench.db", str(table))
    assert warning and "nfs4" in warning and "PostgreSQL" in warning
    assert hosts.network_warning("sqlite:////home/me/diffbench.db", str(table)) is None
    assert hosts.network_warning("postgresql://u@h/db", str(table)) is None
    assert hosts.filesystem(tmp_path / "missing" / "x.db", str(table)) == "ext4"
    assert hosts.sqlite_file("sqlite:///rel.db").is_absolute()
    assert hosts.sqlite_file("sqlite://") is None


# ----------------------------------------------------------------------------- the command line


@pytest.fixture
def submitted(monkeypatch):
    """`runner.slurm.submit` replaced by a recorder: what the CLI would have submitted."""
    from diffbench.tui.runner import slurm

    calls = []

    def fake_submit(home, url, request, settings):
        calls.append({"home": home, "url": url, "request": request, "settings": settings})
        return slurm.Submission(job_id="77", workers=request.workers, db=url, home=str(home),
                                submitted_at="now", request={}, worker={})

    monkeypatch.setattr(slurm, "submit", fake_submit)
    return calls


def nodes(monkeypatch, names):
    """Pretend sinfo lists ``names`` in the asked partition (None: sinfo fails)."""
    from diffbench.tui.runner import slurm

    asked = []

    def fake(partition):
        asked.append(partition)
        if names is None:
            raise slurm.SlurmError("sinfo not found")
        return names

    monkeypatch.setattr(slurm, "partition_nodes", fake)
    return asked


def submit(runner, home, *args):
    return runner.invoke(app, ["--home", str(home), "slurm", "submit", *args])


@pytest.mark.parametrize("args,fragment", [
    (["--workers", "0"], "--workers must be positive"),
    (["--time", "soon"], "--time takes MINUTES"),
    (["--time", "0"], "--time must be positive"),
    (["--mem", "lots"], "--mem takes a size"),
    (["--cpus", "0"], "--cpus must be positive"),
    (["--gpus", "-1"], "--gpus must be 0 or more"),
    (["--sbatch", "array=0-3"], "diffbench sets it"),
    (["--sbatch", "partition=gpu"], "use --partition instead"),
    (["--sbatch", "constraint="], "has no value"),
    (["--sbatch", "Bad Key=1"], "--sbatch takes KEY=VALUE"),
    (["--time", "5", "--signal-delay", "600"], "does not fit"),
    (["--device", "tpu"], "--device takes auto, cpu, cuda"),
    (["--idle-exit", "-1"], "--idle-exit must be non-negative"),
    (["--max-attempts", "0"], "--max-attempts must be positive"),
    (["--db", "nosuchdb://x"], "nosuchdb"),
])
def test_bad_input_exits_2_with_one_line_and_submits_nothing(runner, tmp_path, submitted,
                                                             monkeypatch, args, fragment):
    from tests.cli_checks import assert_one_line_error

    nodes(monkeypatch, ["node1"])
    result = submit(runner, tmp_path, "--workers", "2", *args)
    assert_one_line_error(result, fragment)
    assert submitted == [] and not (tmp_path / "slurm").exists()


def test_submit_passes_the_request_and_the_worker_settings(runner, tmp_path, submitted,
                                                           monkeypatch):
    """What reaches submitit: the resources, the extra sbatch options, the worker's options
    (threads from --cpus) and the database as an absolute URL; the job id on stdout."""
    from diffbench.tui.runner.slurm import Request, WorkerSettings

    nodes(monkeypatch, ["node1"])
    monkeypatch.chdir(tmp_path)
    result = submit(runner, tmp_path, "-n", "3", "-p", "cpu", "--cpus", "4", "--mem", "8g",
                    "--time", "1-00:30", "-A", "proj", "--qos", "low", "--sbatch",
                    "constraint=avx512", "--sbatch", "exclusive", "--setup", "module load x",
                    "--device", "cpu", "--idle-exit", "30", "--max-runs", "5",
                    "--max-attempts", "2", "--db", "sqlite:///rel.db")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "77"
    assert "submitted job array 77: 3 workers" in result.stderr
    (call,) = submitted
    assert call["home"] == tmp_path
    assert call["url"] == f"sqlite:///{tmp_path / 'rel.db'}"
    assert call["request"] == Request(
        workers=3, time_min=24 * 60 + 30, partition="cpu", cpus=4, mem="8G", account="proj",
        qos="low", sbatch={"constraint": "avx512", "exclusive": True},
        setup=("module load x",))
    assert call["settings"] == WorkerSettings(device="cpu", threads=4, idle_exit=30.0,
                                              max_runs=5, max_attempts=2)
    params = call["request"].parameters()
    assert params["cpus_per_task"] == 4 and params["array_parallelism"] == 3
    assert "gpus_per_node" not in params and params["signal_delay_s"] == 90


def test_sqlite_for_workers_on_several_nodes_is_refused(runner, tmp_path, submitted,
                                                        monkeypatch):
    """Several workers on SQLite: refused (one line naming PostgreSQL and --nodelist) when
    the partition has several nodes, sinfo cannot tell, or --nodelist names several;
    allowed pinned to one node, on a one-node partition, or for a single worker."""
    from tests.cli_checks import assert_one_line_error

    asked = nodes(monkeypatch, ["node1", "node2"])
    refused = submit(runner, tmp_path, "-n", "2", "-p", "gpu")
    assert_one_line_error(refused, "PostgreSQL", "--nodelist", "2 nodes of partition gpu")
    assert asked == ["gpu"]
    assert_one_line_error(submit(runner, tmp_path, "-n", "2", "--nodelist", "node[1-2]"),
                          "names several nodes", "PostgreSQL")
    nodes(monkeypatch, None)
    assert_one_line_error(submit(runner, tmp_path, "-n", "2"), "cannot tell", "PostgreSQL")
    assert submitted == []

    assert submit(runner, tmp_path, "-n", "2", "--nodelist", "node1").exit_code == 0
    assert submit(runner, tmp_path, "-n", "1").exit_code == 0
    nodes(monkeypatch, ["node1"])
    assert submit(runner, tmp_path, "-n", "2").exit_code == 0
    assert [c["request"].nodelist for c in submitted] == ["node1", None, None]


def test_postgres_needs_no_node_pinning(runner, tmp_path, submitted, monkeypatch):
    with fresh_postgres() as url:
        asked = nodes(monkeypatch, ["node1", "node2"])
        result = submit(runner, tmp_path, "-n", "4", "--gpus", "1", "--db", url)
        assert result.exit_code == 0, result.output
        assert asked == [] and submitted[0]["url"] == url


def test_dry_run_prints_the_script_and_submits_nothing(runner, tmp_path, submitted,
                                                       monkeypatch):
    nodes(monkeypatch, ["node1"])
    result = submit(runner, tmp_path, "-n", "2", "--gpus", "1", "--cpus", "2", "--time",
                    "90", "--signal-delay", "120", "--dry-run")
    assert result.exit_code == 0, result.output
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=2", "#SBATCH --time=90", "#SBATCH --signal=USR2@120",
                 "submitit.core._submit"):
        assert line in result.stdout
    assert str(tmp_path / "slurm") in result.stdout
    assert submitted == []


@pytest.mark.parametrize("command", ["submit", "ls", "cancel"])
def test_help_has_examples(runner, command):
    result = runner.invoke(app, ["slurm", command, "--help"])
    assert result.exit_code == 0
    assert "Examples" in result.stdout and f"diffbench slurm {command}" in result.stdout


def test_ls_and_cancel_act_on_the_recorded_jobs(runner, tmp_path, monkeypatch):
    """`slurm ls` lists each recorded job's tasks (ENDED once squeue forgets them); `slurm
    cancel` scancels the jobs Slurm still knows, refuses one that is not this workspace's."""
    from diffbench.tui.runner import slurm
    from tests.cli_checks import assert_one_line_error

    for job, count in (("5", 2), ("9", 1), ("12", 1)):
        (tmp_path / "slurm" / job).mkdir(parents=True)
        (tmp_path / "slurm" / job / slurm.RECORD).write_text(json.dumps({
            "job_id": job, "workers": count, "db": "sqlite:///x.db", "home": str(tmp_path),
            "submitted_at": "2026-12-06T00:00:00+00:00", "request": {}, "worker": {}}))
    monkeypatch.setattr(slurm, "_tool", lambda *args, **kw: {
        "squeue": "5_0|RUNNING|node1|1:02|None\n5_1|PENDING||0:00|BeginTime\n"
                  "77_0|RUNNING|n|1|None\n12|RUNNING|node2|0:10|None\n",
    }.get(args[0], ""))
    cancelled = []
    monkeypatch.setattr(slurm, "cancel", lambda ids: cancelled.append(ids))

    rows = json.loads(runner.invoke(app, ["--home", str(tmp_path), "slurm", "ls",
                                          "--json"]).stdout)
    assert [(r["slurm_job"], r["state"], r["node"], r["reason"]) for r in rows] == [
        ("5_0", "RUNNING", "node1", None), ("5_1", "PENDING", None, "BeginTime"),
        ("9_0", "ENDED", None, None), ("12_0", "RUNNING", "node2", None)]
    result = runner.invoke(app, ["--home", str(tmp_path), "slurm", "cancel"])
    assert result.exit_code == 0 and "cancelled 2 job arrays: 5, 12" in result.stderr
    assert cancelled == [["5", "12"]]
    assert runner.invoke(app, ["--home", str(tmp_path), "slurm", "cancel", "9"]).exit_code == 0
    assert cancelled[-1] == []
    assert_one_line_error(runner.invoke(app, ["--home", str(tmp_path), "slurm", "cancel",
                                              "77"]), "not a job submitted from")
    empty = runner.invoke(app, ["--home", str(tmp_path / "other"), "slurm", "ls"])
    assert empty.exit_code == 0 and "no Slurm jobs" in empty.stderr


@pytest.mark.parametrize("text,minutes", [("90", 90), ("1:30", 2), ("2:00:00", 120),
                                          ("1-2", 1560), ("1-0:1", 1441),
                                          ("0-0:0:59", 1)])
def test_slurm_time_forms(text, minutes):
    from diffbench.tui.runner.slurm import parse_time

    assert parse_time(text) == minutes


@pytest.mark.slow
def test_usr2_releases_the_run_then_hands_over_to_submitit(tmp_path, monkeypatch):
    """Inside a task, without Slurm: USR2 stops the worker like SIGTERM (checkpoint, run
    back in the queue, not counted as a lost worker), then the job calls the USR2 handler
    submitit had installed (which checkpoints the job and requeues the task)."""
    import signal
    import threading

    from diffbench.storage import queue as q
    from diffbench.tui.runner.slurm_job import WorkerJob, WorkerSettings
    from tests.helpers import preset_toml, quick, spec

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "31")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    toml = tmp_path / "quick.toml"
    toml.write_text(preset_toml(quick(**{"train.epochs": 200})))
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    db = open_database(url)
    (run_id,) = q.enqueue(db, [spec(toml)]).ids
    handed = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: handed.append(signum))

    def preempt():  # once the run has written steps, as Slurm would: USR2 to the process
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not scalar(
                db, "SELECT COUNT(*) FROM step_metrics WHERE run_id = :id", id=run_id):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGUSR2)

    threading.Thread(target=preempt, daemon=True).start()
    try:
        code = WorkerJob(str(tmp_path), url, WorkerSettings(device="cpu", idle_exit=0))(1)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    try:
        run = q.get_run(db, run_id)
        assert code == 0 and handed == [signal.SIGUSR2]
        assert run.status.value == "queued" and 0 < run.steps_done < 400
        assert "SIGUSR2" in run.error and not (run.provenance or {}).get("workers_lost")
        assert (tmp_path / "runs" / str(run_id) / "checkpoints").exists()
        (worker,) = workers.list_workers(db)
        assert worker.slurm_job == "31_1" and worker.stopped_at is not None
    finally:
        db.dispose()


# ----------------------------------------------------------------------------- a real cluster

SLURM_SKIP = ("Slurm tests need a cluster: DIFFBENCH_TEST_SLURM is not set (bash .ci/slurm "
              ".venv/bin/python -m pytest tests/test_slurm.py starts a throwaway one)")
needs_slurm = pytest.mark.skipif(os.environ.get("DIFFBENCH_TEST_SLURM") != "1",
                                 reason=SLURM_SKIP)


def diffbench(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    env.pop("DIFFBENCH_DB", None)
    return subprocess.run([str(Path(sys.executable).with_name("diffbench")), "--home",
                           str(home), *args], capture_output=True, text=True, env=env,
                          timeout=120)


def wait_for(what: str, check, deadline: float, every: float = 0.05):
    """Poll ``check`` until it returns something truthy; fail naming ``what`` at the
    deadline."""
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}")


def scalar(db: Database, sql: str, **params):
    with db.engine.connect() as connection:
        return connection.execute(sa.text(sql), params).scalar()


@needs_slurm
@pytest.mark.slow
def test_array_workers_drain_the_queue_through_a_preemption(tmp_path, capsys):
    """Two array workers drain 10 runs on a SQLite file (one node: allowed); task 1 gets
    USR2 mid-run: its worker checkpoints and releases the run, the task requeues itself and
    starts again, the run resumes from its checkpoint and finishes. Every run is done once,
    no step or epoch row is written twice, and the time from the signal to the run back in
    the queue is printed."""
    from diffbench.storage import queue as q
    from tests.helpers import preset_toml, quick, spec

    home = tmp_path / "shared"
    home.mkdir()
    toml = home / "quick.toml"
    toml.write_text(preset_toml(quick(**{"train.epochs": 15})))  # 30 steps, ≈ 6 s a run
    db = open_database(f"sqlite:///{home / 'diffbench.db'}")
    try:
        ids = q.enqueue(db, [spec(toml, seed=seed) for seed in range(10)]).ids
        start = time.monotonic()
        deadline = start + 300
        submitted = diffbench(home, "slurm", "submit", "--workers", "2", "--cpus", "1",
                              "--device", "cpu", "--idle-exit", "8", "--time", "30",
                              "--lease", "20")
        assert submitted.returncode == 0, submitted.stderr
        job = submitted.stdout.strip()

        def victim():  # task 1's run, once it has written a few steps
            return scalar(db, "SELECT r.id FROM runs r JOIN workers w ON w.id = r.worker_id "
                          "WHERE w.slurm_job = :job AND r.status = 'running' AND "
                          "(SELECT COUNT(*) FROM step_metrics s WHERE s.run_id = r.id) >= 6",
                          job=f"{job}_1")

        run_id = wait_for("task 1 to be training", victim, deadline)
        signalled = time.monotonic()
        subprocess.run(["scancel", "--signal=USR2", f"{job}_1"], check=True, timeout=30)
        status = wait_for("the run to leave 'running'", lambda: (
            s if (s := scalar(db, "SELECT status FROM runs WHERE id = :id", id=run_id))
            != "running" else None), deadline)
        released = time.monotonic() - signalled
        assert status == "queued"
        released_at = q.get_run(db, run_id).steps_done

        def restarted():  # the requeued task's new worker
            return scalar(db, "SELECT COUNT(*) FROM workers WHERE slurm_job = :job",
                          job=f"{job}_1") >= 2

        wait_for("task 1 to start again", restarted, deadline, every=0.2)
        requeued = time.monotonic() - signalled
        reclaimed = scalar(db, "SELECT status FROM runs WHERE id = :id", id=run_id)

        def ended():  # squeue lists neither task (or no longer knows the job)
            out = subprocess.run(["squeue", "-h", "-r", "-j", job, "-o", "%i"],
                                 capture_output=True, text=True, timeout=30)
            return out.returncode != 0 or not out.stdout.strip()

        wait_for("both tasks to end", ended, deadline, every=0.5)
        total = time.monotonic() - start

        runs = {run.id: run for run in q.list_runs(db)}
        assert {run.status.value for run in runs.values()} == {"done"}, runs
        assert [runs[i].attempts for i in ids] == [2 if i == run_id else 1 for i in ids]
        for i in ids:  # every step and epoch once, none missing
            steps = scalar(db, "SELECT COUNT(DISTINCT step) FROM step_metrics "
                           "WHERE run_id = :id", id=i)
            rows = scalar(db, "SELECT COUNT(*) FROM step_metrics WHERE run_id = :id", id=i)
            epochs = scalar(db, "SELECT COUNT(*) FROM epoch_metrics WHERE run_id = :id", id=i)
            assert rows == steps == runs[i].steps_done == 30, (i, rows, steps)
            assert epochs == scalar(db, "SELECT COUNT(DISTINCT epoch) FROM epoch_metrics "
                                    "WHERE run_id = :id", id=i) == 15, i
        assert 0 < released_at < 30
        logs = "".join(p.read_text() for p in (home / "slurm" / job).glob("*_log.err"))
        assert f"run {run_id} resumed at step {released_at}" in logs, logs
        assert "Requeued job" in (home / "slurm" / job / f"{job}_1_0_log.out").read_text()

        slurm_jobs = [w.slurm_job for w in workers.list_workers(db)]
        assert sorted(slurm_jobs) == [f"{job}_0", f"{job}_1", f"{job}_1"]
        listed = json.loads(diffbench(home, "slurm", "ls", "--json").stdout)
        assert [(t["slurm_job"], t["state"]) for t in listed] == [
            (f"{job}_0", "ENDED"), (f"{job}_1", "ENDED")]
        with capsys.disabled():
            print(f"\nslurm preemption: USR2 → run {run_id} back in the queue in "
                  f"{released:.2f} s (released at step {released_at}, {reclaimed} when the "
                  f"requeued task started); task requeued and running again after "
                  f"{requeued:.1f} s; 10 runs drained in {total:.0f} s")
    finally:
        db.dispose()
