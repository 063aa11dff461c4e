"""`diffbench data …`: make, inspect and look at Kolmogorov-flow data sets.

Each command validates all of its input before it writes anything, then forwards to one
private function. The engine (and with it torch) is imported inside those functions only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from diffbench.engine.vocabulary import SPLITS
from diffbench.storage.workspace import Workspace

from .. import output
from ..errors import EXIT_INTERRUPTED, UserError, require, require_writable, user_errors

if TYPE_CHECKING:
    pass

app = typer.Typer(
    help="Make, inspect and look at Kolmogorov-flow data sets (HDF5).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)



# --------------------------------------------------------------------------- generate


@app.command()
def generate(
    ctx: typer.Context,
    preset: Annotated[
        str,
        typer.Option(
            "--preset", "-p", help="Preset name (tiny, small, paper) or a path to a preset .toml."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", metavar="PATH",
            help="Output file. Default: <home>/data/<preset>.h5 "
            "(<preset>-<hash8>.h5 when the data recipe is not a shipped preset's own: "
            "--trajectories, --seed or a preset file; the worker finds the same file).",
            show_default=False,
        ),
    ] = None,
    trajectories: Annotated[
        int | None,
        typer.Option("--trajectories", "-n", help="Override the preset's trajectory count.",
                     show_default=False),
    ] = None,
    device: Annotated[
        str,
        typer.Option("--device", "-d", envvar="DIFFBENCH_DEVICE",
                     help="auto (CUDA when present), cpu, cuda or cuda:N."),
    ] = "auto",
    seed: Annotated[
        int | None,
        typer.Option("--seed", "-s", help="Override the preset's base seed (≥ 0).",
                     show_default=False),
    ] = None,
    compile: Annotated[
        bool | None,
        typer.Option("--compile/--no-compile",
                     help="Fuse the solver with torch.compile. Default: on for CUDA and for "
                     "grids of 128² and more, where it pays for its compilation.",
                     show_default=False),
    ] = None,
) -> None:
    """Simulate Kolmogorov-flow trajectories and write them to one HDF5 file.

    Writes to a temporary [cyan]<file>.partial[/] and renames it when complete; an
    interrupted run (Ctrl-C) resumes from its last finished chunk when run again.
    Re-running a finished command does nothing; a file of another recipe is never
    overwritten.

    [bold]Examples[/]

      diffbench data generate --preset tiny
      diffbench data generate --preset tiny --trajectories 10 --out tiny10.h5
      diffbench --home /scratch/db data generate --preset paper --device cuda
    """
    workspace: Workspace = ctx.obj
    _generate(workspace, preset=preset, out=out, trajectories=trajectories, device=device,
              seed=seed, compile=compile)


def _generate(workspace: Workspace, *, preset: str, out: Path | None, trajectories: int | None,
              device: str, seed: int | None, compile: bool | None) -> None:
    from diffbench.engine.config import PresetError, dataset_name, load_preset, override

    with user_errors(PresetError):
        require(trajectories is None or trajectories > 0,
                f"--trajectories must be positive, got {trajectories}")
        require(seed is None or seed >= 0, f"--seed must be non-negative, got {seed}")
        config = load_preset(preset)
        changes = {"data.trajectories": trajectories, "data.seed": seed}
        config = override(config, {k: v for k, v in changes.items() if v is not None})
        path = out if out is not None else workspace.dataset_path(dataset_name(config))
        path = path.expanduser().absolute()
        require(not path.is_dir(), f"output path {str(path)!r} is a directory")
        require_writable(path.parent, path)

    from rich.markup import escape

    from diffbench.engine.dataset import (
        DatasetError,
        compile_pays_off,
        generate_dataset,
        open_dataset,
    )
    from diffbench.engine.device import DeviceError, resolve_device

    with user_errors(DeviceError):
        torch_device = resolve_device(device)

    if path.exists():
        with user_errors(DatasetError):
            made_with = open_dataset(path).preset["data"]
            require(made_with == config.to_dict()["data"],
                    f"{path} holds a data set of another recipe; remove it or choose another --out")
        output.console().print(f"{path} already holds this data set; nothing to do.",
                         soft_wrap=True, markup=False)
        return

    data = config.data
    if compile is None:
        compile = compile_pays_off(data, torch_device)
    err = output.console(stderr=True)
    err.print(f"generating [bold]{escape(config.name)}[/]: {data.trajectories} trajectories, "
              f"{data.size}² → {data.resolution}², {data.kept} states each, on {torch_device}"
              f"{' (compiled solver)' if compile else ''}")
    started = time.perf_counter()
    try:
        with user_errors(DatasetError), output.GenerationProgress(err, data.trajectories) as report:
            path.parent.mkdir(parents=True, exist_ok=True)
            written = generate_dataset(config, path, device=torch_device, compile=compile,
                                       progress=report)
    except KeyboardInterrupt:
        err.print(f"interrupted; finished chunks are kept in {path}.partial: "
                  "run the same command again to resume", soft_wrap=True, markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    elapsed = time.perf_counter() - started
    _print_written(Path(written), elapsed)


def _print_written(path: Path, elapsed: float) -> None:
    from diffbench.engine.dataset import open_dataset

    info = open_dataset(path)
    layout = ", ".join(f"{name} {info.shapes[name]}" for name in SPLITS)
    size = path.stat().st_size / 1e6
    output.console().print(f"wrote {path} ({size:.1f} MB) in {elapsed:.1f} s\n  {layout}",
                     soft_wrap=True, markup=False)


# --------------------------------------------------------------------------- info


DATASET_HELP = ("A data set: a file path, or the name of one in the workspace "
                "(tiny → <home>/data/tiny.h5).")


def _find(workspace: Workspace, dataset: str) -> Path:
    path = workspace.find_dataset(dataset)
    if path is None:
        looked = ", ".join(str(p) for p in workspace.dataset_candidates(dataset))
        raise UserError(f"no data set {dataset!r} (looked for {looked})")
    return path


@app.command()
def info(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help=DATASET_HELP, metavar="DATASET",
                                           show_default=False)],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document on stdout instead of tables.")
    ] = False,
    split: Annotated[
        str, typer.Option("--split", help="Split to compute the statistics on.")
    ] = "train",
) -> None:
    """Describe a data set: layout, attributes, checksum and physical statistics.

    Verifies the stored checksum of the data (exit code 2 on a mismatch), then
    computes velocity std, kinetic energy, vorticity std, lag-1 autocorrelation, the
    shell energy spectrum E(k), the relative divergence and the mean flow along sin(4y),
    next to the reference values of the paper's data (spec §1, 64²).

    [bold]Examples[/]

      diffbench data info tiny
      diffbench data info ./tiny10.h5 --json | python -m json.tool
    """
    _info(ctx.obj, dataset, as_json=as_json, split=split)


def _info(workspace: Workspace, dataset: str, *, as_json: bool, split: str) -> None:
    from diffbench.engine.dataset import (
        DatasetError,
        open_dataset,
        split_statistics,
        verify_checksum,
    )

    with user_errors(DatasetError):
        require(split in SPLITS, f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
        path = _find(workspace, dataset)
        info = open_dataset(path)
        verify_checksum(path)
        stats = split_statistics(path, split)

    report = {
        "path": str(path.absolute()),
        "size_bytes": path.stat().st_size,
        "checksum": {"sha256": info.attrs["checksum"], "verified": True},
        "splits": {name: list(info.shapes[name]) for name in SPLITS},
        "preset": info.preset,
        "attributes": {k: v for k, v in info.attrs.items() if k != "preset"},
        "statistics": {"split": split, **stats.as_dict()},
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        from ..tables import info_tables

        output.console().print(*info_tables(report))


# --------------------------------------------------------------------------- preview


@app.command()
def preview(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help=DATASET_HELP, metavar="DATASET",
                                           show_default=False)],
    split: Annotated[str, typer.Option("--split", help="train, valid or test.")] = "valid",
    index: Annotated[int, typer.Option("--index", "-i", help="Trajectory within the split.")] = 0,
    states: Annotated[
        int, typer.Option("--states", "-k", help="How many states, evenly spaced in time.")
    ] = 5,
    ascii: Annotated[
        bool, typer.Option("--ascii", help="Plain ASCII ramp instead of truecolor half blocks "
                           "(also when NO_COLOR is set).")
    ] = False,
    width: Annotated[
        int | None, typer.Option("--width", help="Columns to use. Default: the terminal's.",
                                 show_default=False)
    ] = None,
) -> None:
    """Draw the vorticity of one trajectory as a row of snapshots in the terminal.

    Colours show ω = ∂y u − ∂x v (index units, the reference's picture convention),
    clipped to ±1.25 with contrast sign·|ω|^0.8 on a diverging ice (negative) / fire
    (positive) map. Rows of a picture are x, columns y.

    [bold]Examples[/]

      diffbench data preview tiny
      diffbench data preview tiny --split test --index 3 --states 8
      NO_COLOR=1 diffbench data preview ./tiny10.h5     # or --ascii
    """
    _preview(ctx.obj, dataset, split=split, index=index, states=states,
             ascii=ascii or output.no_color(), width=width)


def _preview(workspace: Workspace, dataset: str, *, split: str, index: int, states: int,
             ascii: bool, width: int | None) -> None:
    import numpy as np

    from diffbench.engine.dataset import DatasetError, load_split, open_dataset
    from diffbench.engine.vorticity import display_vorticity, vorticity

    from ..render import legend, render_row

    console = output.console()
    with user_errors(DatasetError):
        require(width is None or width > 0, f"--width must be positive, got {width}")
        if width is not None:
            console.width = width
        require(split in SPLITS, f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
        require(states > 0, f"--states must be positive, got {states}")
        path = _find(workspace, dataset)
        shape = open_dataset(path).shapes[split]
        count, length = shape[0], shape[1]
        require(0 <= index < count,
                f"--index {index} is out of range: split {split!r} holds {count} trajectories")
        require(states <= length, f"--states {states} exceeds the {length} stored states")
        picks = np.unique(np.linspace(0, length - 1, states).round().astype(int))
        trajectory = load_split(path, split, index)  # (T, 2, H, W)
        images = display_vorticity(vorticity(trajectory[picks]))
        try:
            text = render_row(list(images), columns=console.width, ascii=ascii,
                              titles=[f"state {i}" for i in picks])
        except ValueError as error:  # too narrow a terminal
            raise UserError(str(error)) from None
    console.print(f"{path.name}  {split}[{index}]  vorticity ω = ∂y u − ∂x v", style="bold")
    console.print(text, no_wrap=True)
    console.print(legend(ascii=ascii, low="−1.25", high="+1.25"))
