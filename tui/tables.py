"""Rich tables for `diffbench data info`, built from the same report dict that `--json` prints."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from diffbench.engine.statistics import REFERENCE_64

MAX_VALUE = 72  # attribute values longer than this are cut (the JSON has them whole)
SPECTRUM_SHELLS = (1, 2, 3, 4, 5, 6, 7, 8, 16, 32)

STATISTICS = (  # key, label, format
    ("u_std", "u std", "{:.3f}"),
    ("v_std", "v std", "{:.3f}"),
    ("kinetic_energy", "kinetic energy ½⟨u²+v²⟩", "{:.3f}"),
    ("vorticity_std", "vorticity std (∂x v − ∂y u)", "{:.2f}"),
    ("lag1_autocorrelation", "lag-1 autocorrelation (Δt 0.2)", "{:.3f}"),
    ("divergence", "divergence ‖∇·u‖/‖∇u‖ (spectral)", "{:.2e}"),
    ("mean_flow_sin4y", "mean u along sin(4y)", "{:.3f}"),
)


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _fmt(fmt: str, value: float | None) -> str:
    return "—" if value is None else fmt.format(value)


def info_tables(report: dict[str, Any]) -> list[Any]:
    """Header line, layout, attributes, statistics and spectrum tables for ``report``."""
    size_mb = report["size_bytes"] / 1e6
    header = Text.assemble(
        (report["path"], "bold"), f"  {size_mb:.1f} MB  ",
        ("checksum verified ✓", "green"),
    )

    layout = Table(title=escape("Layout (trajectory, time, [u, v], x, y), float32"),
                   title_justify="left")
    for column in ("split", "trajectories", "states", "grid", "shape"):
        layout.add_column(column, justify="left" if column in ("split", "shape") else "right")
    for name, shape in report["splits"].items():
        n, t, _, h, w = shape
        layout.add_row(name, str(n), str(t), f"{h}×{w}", str(tuple(shape)))

    attributes = Table(title="Attributes", title_justify="left")
    attributes.add_column("key")
    attributes.add_column("value", overflow="fold")
    for key, value in report["attributes"].items():
        attributes.add_row(key, escape(_short(value)))

    stats = report["statistics"]
    statistics = Table(
        title=f"Statistics of the {stats['split']} split "
        f"({stats['trajectories']} trajectories, {stats['states']} states)",
        title_justify="left",
    )
    statistics.add_column("quantity")
    statistics.add_column("value", justify="right")
    statistics.add_column("spec (paper, 64²)", justify="right", style="dim")
    for key, label, fmt in STATISTICS:
        statistics.add_row(label, _fmt(fmt, stats[key]), _fmt(fmt, REFERENCE_64.get(key)))

    spectrum = Table(title="Shell energy spectrum E(k)", title_justify="left")
    spectrum.add_column("k", justify="right")
    spectrum.add_column("E(k)", justify="right")
    spectrum.add_column("spec (paper, 64²)", justify="right", style="dim")
    values = stats["spectrum"]
    for k in SPECTRUM_SHELLS:
        if k <= len(values):
            spectrum.add_row(str(k), f"{values[k - 1]:.3g}",
                             _fmt("{:.3g}", REFERENCE_64["spectrum"].get(k)))
    return [header, layout, attributes, statistics, spectrum]
