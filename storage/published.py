"""The paper's published numbers (presets/paper_results.csv) and diffbench's settings set
beside them: the same optimizer, schedule, epochs and lr/wd the series names."""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from diffbench.storage.results import SettingStats

PAPER_PRESET = "paper"
PAPER_EPOCHS = 1024  # spec §7: the published losses are after 1024 epochs
_SERIES = re.compile(r"^(?P<name>[A-Za-z]+)(?:\((?P<params>[^)]*)\))?(?P<rest>.*)$")


@dataclass(frozen=True)
class Published:
    """One published number (a row of presets/paper_results.csv)."""

    figure: str
    series: str
    key: str
    value: float


@dataclass(frozen=True)
class Compared:
    """A published number beside diffbench's (None: no matching finished runs)."""

    published: Published
    ours: float | None
    seeds: int
    setting: str


def load_published() -> tuple[list[Published], str]:
    """The published figures shipped in ``presets/paper_results.csv`` and its source line."""
    text = resources.files("diffbench.presets").joinpath("paper_results.csv").read_text()
    comments = [line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")]
    rows = csv.DictReader(io.StringIO("\n".join(
        line for line in text.splitlines() if line and not line.startswith("#"))))
    values = [Published(r["figure"], r["series"], r["key"], float(r["value"])) for r in rows]
    return values, comments[0] if comments else ""


def _series(series: str) -> tuple[str, dict[str, float], int | None]:
    """``AdamW(lr2e-4,wd1e-2,2048ep)`` → ("adamw", {lr, wd, epochs}, rank of "topN" or None)."""
    match = _SERIES.match(series.strip())
    if match is None:
        raise ValueError(f"unreadable series {series!r}")
    params: dict[str, float] = {}
    for token in filter(None, (t.strip() for t in (match["params"] or "").split(","))):
        if token.startswith(("lr", "wd")):
            params[token[:2]] = float(token[2:])
        elif token.endswith("ep"):
            params["epochs"] = float(token[:-2])
    rank = re.search(r"top(\d+)", match["rest"])
    return match["name"].lower(), params, int(rank[1]) if rank else None


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6)


def compare_published(stats: Sequence[SettingStats], published: Sequence[Published]
                      ) -> list[Compared]:
    """Each published number beside the matching ``paper``-preset setting: same optimizer,
    linear decay (ScheduleFree: constant), 1024 epochs unless the series says otherwise,
    the lr and wd the series or key names, else the best one (``topN``: the N-th best lr)."""
    paper = [s for s in stats if s.first.preset == PAPER_PRESET]
    out = []
    for item in published:
        name, params, rank = _series(item.series)
        schedule = "constant" if name == "schedulefree" else "linear"
        lr = params.get("lr")
        if lr is None and re.fullmatch(r"[0-9.]+e-?[0-9]+", item.key):
            lr = float(item.key)
        pool = [s for s in paper if s.first.optimizer == name and s.first.schedule == schedule
                and s.first.epochs == int(params.get("epochs", PAPER_EPOCHS))
                and (lr is None or _close(s.first.lr, lr))
                and ("wd" not in params or _close(s.first.weight_decay, params["wd"]))]
        pool.sort(key=lambda s: s.mean)
        if rank is not None:  # the best setting of each lr, ranked
            best_per_lr: dict[float, SettingStats] = {}
            for s in pool:
                best_per_lr.setdefault(s.first.lr, s)
            pool = list(best_per_lr.values())[rank - 1:rank]
        if not pool:
            out.append(Compared(item, None, 0, ""))
            continue
        chosen = pool[0]
        if item.key == "end_time_min":
            values = [r.train_s / 60 for r in chosen.runs if r.train_s is not None]
            ours = float(np.mean(values)) if values else None
        elif item.key == "min_val_on_curve":
            ours = float(np.mean([min(p.loss for p in r.curve) for r in chosen.runs]))
        else:
            ours = chosen.mean
        out.append(Compared(item, ours, chosen.seeds, chosen.label()))
    return out
