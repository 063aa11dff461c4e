"""The workspace: one directory that holds a user's data sets (and later runs and the job db).

Precedence, resolved here and nowhere else: an explicit ``home`` (the CLI's ``--home``)
beats the ``DIFFBENCH_HOME`` environment variable, which beats the platform's user data
directory (``platformdirs.user_data_dir("diffbench")``).

Layout::

    <home>/
        data/<name>.h5      data sets made by `diffbench data generate`
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "DIFFBENCH_HOME"


def default_home() -> Path:
    """``$DIFFBENCH_HOME`` if set and non-empty, else the platform's user data directory."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("diffbench", appauthor=False))


@dataclass(frozen=True)
class Workspace:
    """Paths inside one workspace directory. Creating the object touches no disk."""

    root: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None = None) -> Workspace:
        root = Path(home).expanduser() if home else default_home()
        return cls(root.absolute())

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def dataset_path(self, name: str) -> Path:
        """Where the data set called ``name`` (`engine.config.dataset_name`) lives."""
        return self.data_dir / f"{name}.h5"

    def dataset_candidates(self, name_or_path: str | os.PathLike[str]) -> list[Path]:
        """Where :meth:`find_dataset` looks, in order: the path itself, then for a bare name
        without suffix (``"tiny"``) the workspace's ``<home>/data/tiny.h5``."""
        path = Path(name_or_path).expanduser()
        candidates = [path]
        if path.name == str(name_or_path) and path.suffix == "":
            candidates.append(self.dataset_path(path.name))
        return candidates

    def find_dataset(self, name_or_path: str | os.PathLike[str]) -> Path | None:
        """The first existing file among :meth:`dataset_candidates`, else None."""
        return next((p for p in self.dataset_candidates(name_or_path) if p.exists()), None)
