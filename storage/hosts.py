"""Which hosts may share a job database: SQLite is one machine's, PostgreSQL anyone's.

SQLite keeps its locks in the file system and, in WAL mode, in shared memory beside the
file: processes on one machine share them, processes on two machines do not (a network file
system's locks are unreliable, and WAL's shared memory is never shared across hosts). Two
hosts writing one SQLite file can corrupt it. So a worker refuses to start on SQLite while
a live worker of another host uses it (`storage.workers.register_worker`, ``one_host=True``),
``diffbench slurm submit`` refuses SQLite for workers that may land on several nodes, and a
SQLite file on a network file system (``/proc/mounts``) is warned about: even one host at a
time is slow there, and a second host that opens it (``diffbench tui`` on a login node) is
the case above.

Nothing here imports SQLAlchemy at module level: the CLI checks URLs before it opens them.
"""

from __future__ import annotations

import os
from pathlib import Path

from diffbench.storage.errors import StorageError

#: File-system types (as /proc/mounts names them) whose files other hosts may open.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "lustre", "gpfs", "beegfs",
    "ceph", "cephfs", "glusterfs", "fuse.glusterfs", "fuse.sshfs", "fuse.cephfs", "panfs",
    "ocfs2", "gfs2", "wekafs", "fuse.juicefs", "fuse.s3fs", "fuse.gcsfuse",
})

#: A worker heard from within this many seconds counts as live for the one-host rule (an
#: idle worker beats every lease/3, 20 s at the default lease).
LIVE_GRACE_S = 120.0

PG_HINT = "use PostgreSQL for workers on several hosts (--db postgresql://user@server/db)"


class SharedSQLite(StorageError):
    """A SQLite job database that workers on more than one host would share."""


def is_sqlite(url: str) -> bool:
    """Whether ``url`` names a SQLite database (``sqlite:`` or ``sqlite+driver:``)."""
    return url.split(":", 1)[0].split("+", 1)[0] == "sqlite"


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (absolute), None for another database or an in-memory one."""
    if not is_sqlite(url):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        database = make_url(url).database
    except ArgumentError:
        return None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(os.path.abspath(database))


def mounts(table: str = "/proc/mounts") -> list[tuple[str, str]]:
    """(mount point, file-system type) of each mounted file system; [] where unreadable."""
    try:
        with open(table, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 3:  # octal escapes: a space in a mount point is \040
            found.append((fields[1].encode().decode("unicode_escape"), fields[2]))
    return found


def filesystem(path: Path, table: str = "/proc/mounts") -> str | None:
    """The type of the file system holding ``path`` (symbolic links resolved): the mount
    with the longest matching mount point; None where /proc/mounts is unreadable."""
    folder = Path(path).resolve()
    best, kind = -1, None
    for point, fstype in mounts(table):
        inside = folder == Path(point) or Path(point) in folder.parents
        if inside and len(point) > best:
            best, kind = len(point), fstype
    return kind


def network_warning(url: str, table: str = "/proc/mounts") -> str | None:
    """A warning when ``url`` is a SQLite file on a network file system, else None."""
    path = sqlite_file(url)
    if path is None:
        return None
    kind = filesystem(path.parent, table)
    if kind is None or kind.lower() not in NETWORK_FILESYSTEMS:
        return None
    return (f"the SQLite job database {path} is on a network file system ({kind}): SQLite's "
            f"locks are unreliable there and a second host opening it can corrupt it; keep "
            f"every worker and reader on one host, or {PG_HINT}")


def refusal(url: str, host: str, other_host: str, worker_id: int, seconds: float) -> str:
    """The one-line refusal of a worker on ``host`` when ``other_host`` already uses ``url``."""
    return (f"{url} is a SQLite database, and worker {worker_id} on host {other_host} used it "
            f"{seconds:.0f} s ago: SQLite cannot be shared between hosts ({host} is another); "
            f"{PG_HINT}")
