"""A worker's load as text, for the dashboard's workers pane and `diffbench workers ls`:
the latest GPU utilisation, memory and temperature and the host's CPU % and RAM, with a
sparkline of the recent samples (0–100 %: workers compare by eye).

An absent sensor says so rather than showing a zero: ``—`` before a worker's first sample
and for GPU columns of a CPU worker, ``no GPU sensor`` for a GPU worker whose GPU did not
answer (no NVIDIA driver, a MIG slice without utilisation).
"""

from __future__ import annotations

from collections.abc import Sequence

from diffbench.storage.workers import LoadSample

BLOCKS = "▁▂▃▄▅▆▇█"
ABSENT = "—"
NO_GPU = "no GPU sensor"
COLUMNS = ("gpu", "gpu mem", "temp", "cpu", "ram")


def sparkline(values: Sequence[float | None], width: int = 8) -> str:
    """The last ``width`` percentages as block heights (a gap where a value is absent)."""
    out = []
    for value in list(values)[-width:]:
        if value is None:
            out.append(" ")
        else:
            level = min(max(value, 0.0), 100.0) / 100.0
            out.append(BLOCKS[min(len(BLOCKS) - 1, int(level * len(BLOCKS)))])
    return "".join(out)


def gib(used: int | None, total: int | None) -> str:
    """``41.2/80.0G``; ``—`` without a reading."""
    if used is None or total is None:
        return ABSENT
    return f"{used / 2**30:.1f}/{total / 2**30:.0f}G"


def _percent(value: float | None) -> str:
    return ABSENT if value is None else f"{value:.0f}%"


def load_cells(samples: Sequence[LoadSample], device: str, *, width: int = 8
               ) -> tuple[str, ...]:
    """The cells of `COLUMNS` for a worker's samples (oldest first) on ``device``."""
    if not samples:
        return (ABSENT,) * len(COLUMNS)
    last = samples[-1]
    if last.has_gpu:
        gpu = (f"{sparkline([s.gpu_util for s in samples], width)} {_percent(last.gpu_util)}",
               gib(last.gpu_memory_used, last.gpu_memory_total),
               ABSENT if last.gpu_temp is None else f"{last.gpu_temp:.0f}°C")
    elif device.startswith("cuda"):
        gpu = (NO_GPU, ABSENT, ABSENT)
    else:
        gpu = (ABSENT, ABSENT, ABSENT)
    cpu = (f"{sparkline([s.cpu_percent for s in samples], width)} "
           f"{_percent(last.cpu_percent)}" if last.cpu_percent is not None else ABSENT)
    return (*gpu, cpu, gib(last.ram_used, last.ram_total))


def load_dict(sample: LoadSample | None) -> dict[str, object] | None:
    """The latest sample as JSON fields (None: none yet; a None field: the sensor is
    absent)."""
    if sample is None:
        return None
    return {"at": sample.at, "gpu_util_percent": sample.gpu_util,
            "gpu_memory_used_bytes": sample.gpu_memory_used,
            "gpu_memory_total_bytes": sample.gpu_memory_total,
            "gpu_temperature_c": sample.gpu_temp, "cpu_percent": sample.cpu_percent,
            "ram_used_bytes": sample.ram_used, "ram_total_bytes": sample.ram_total}
