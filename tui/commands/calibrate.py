"""`diffbench calibrate`: time each optimizer's full training step side by side on this
device and preset, in interleaved rounds, and store it per (device, preset)
(`runner.calibrate`); `--list` prints the stored calibrations.

The report and the dashboard then take step-time ratios and the training-time axis from the
newest calibration of a run's device and preset instead of the runs' own step times, which
other runs on the same machine may have slowed (docs/REPORT.md "Step time").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from diffbench.engine.vocabulary import OPTIMIZERS, PRECISIONS, unknown

from ..errors import require, user_errors
from ..output import JsonOption, database, print_json, print_table

if TYPE_CHECKING:
    from diffbench.storage.calibration import Calibration

Many = list[str] | None


def calibrate(
    ctx: typer.Context,
    preset: Annotated[str | None, typer.Option(
        "--preset", "-p", envvar="DIFFBENCH_PRESET", help="Preset name (tiny, small, paper) "
        "or a path to a preset .toml, as the runs to compare name it.",
        show_default=False)] = None,
    optimizer: Annotated[Many, typer.Option(
        "--optimizer", "-O", metavar="NAME[,NAME…]", help=f"Optimizers ({', '.join(OPTIMIZERS)})"
        "; comma-separated or repeated. Default: all.", show_default=False)] = None,
    device: Annotated[str, typer.Option(
        "--device", "-d", envvar="DIFFBENCH_DEVICE",
        help="auto (CUDA when present), cpu, cuda or cuda:N.")] = "auto",
    rounds: Annotated[int, typer.Option(
        "--rounds", "-r", help="Timed rounds (after one warm-up round).")] = 5,
    steps: Annotated[int, typer.Option(
        "--steps", help="Steps per optimizer and round.")] = 20,
    precision: Annotated[str, typer.Option(
        "--precision", help="fp32 (TF32 matmuls on CUDA) or bf16 autocast, as the runs.")
    ] = "fp32",
    compile: Annotated[bool | None, typer.Option(
        "--compile/--no-compile", help="torch.compile the loss. Default: as a run decides "
        "(on CUDA, compiled; compilation happens before the warm-up round and is not timed).",
        show_default=False)] = None,
    list_: Annotated[bool, typer.Option(
        "--list", help="Print the stored calibrations; time nothing.")] = False,
    json_: JsonOption = False,
) -> None:
    """Time every optimizer's training step side by side (A B C … per round, the first
    round a warm-up) on this device and preset; store mean ms/step and its spread per
    optimizer for the report's and the dashboard's step-time ratios and time axis.

    [bold]Examples[/]

      diffbench calibrate --preset paper --device cuda
      diffbench calibrate -p tiny -O adamw,muon --rounds 3 --steps 10
      diffbench calibrate --list
    """
    if list_:
        _list(ctx, as_json=json_)
        return
    from diffbench.engine.config import PresetError, load_preset
    from diffbench.engine.device import DeviceError, resolve_device

    names = [n.strip() for value in optimizer or () for n in value.split(",") if n.strip()]
    names = list(dict.fromkeys(names or OPTIMIZERS))
    with user_errors(PresetError, DeviceError):
        require(preset is not None, "--preset is required (the preset the runs trained on)")
        require(rounds >= 1, f"--rounds must be ≥ 1, got {rounds}")
        require(steps >= 1, f"--steps must be ≥ 1, got {steps}")
        require(precision in PRECISIONS, unknown("precision", precision, PRECISIONS))
        for name in names:
            require(name in OPTIMIZERS, unknown("optimizer", name, OPTIMIZERS))
        loaded = load_preset(preset)
        missing = [n for n in names if n not in loaded.optimizers]
        require(not missing, f"preset {preset} has no defaults for {', '.join(missing)}")
        resolve_device(device)
    _calibrate(ctx, preset, names, device=device, rounds=rounds, steps=steps,
               precision=precision, compile=compile, as_json=json_)


def _calibrate(ctx: typer.Context, preset: str, names: list[str], *, as_json: bool,
               **options: Any) -> None:
    from rich.progress import Progress

    from ..output import console
    from ..runner.calibrate import calibrate as run

    with database(ctx) as db, Progress(console=console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"calibrating {len(names)} optimizers on {preset}",
                            total=options["rounds"] + 1)
        calibration = run(db, preset, names,
                          on_round=lambda done, total: bar.update(task, completed=done),
                          **options)
    if as_json:
        print_json(_dict(calibration))
        return
    _show(calibration)


def _list(ctx: typer.Context, *, as_json: bool) -> None:
    from diffbench.storage.calibration import calibrations

    with database(ctx) as db:
        stored = calibrations(db)
    if as_json:
        print_json([_dict(c) for c in stored])
        return
    if not stored:
        typer.echo("no calibrations yet: diffbench calibrate --preset NAME")
    for calibration in stored:
        _show(calibration)


def _dict(calibration: Calibration) -> dict[str, Any]:
    import dataclasses

    out = dataclasses.asdict(calibration)
    base = calibration.time("adamw")
    for entry, time in zip(out["times"], calibration.times, strict=True):
        ratio = None if base is None else calibration.ratio(time.optimizer, "adamw")
        entry["ratio_to_adamw"] = None if ratio is None else {
            "value": ratio.value, "low": ratio.low, "high": ratio.high}
    return out


def _show(calibration: Calibration) -> None:
    title = (f"calibration #{calibration.id}: {calibration.device} · preset "
             f"{calibration.preset} · {calibration.host} · "
             f"{calibration.created_at:%Y-%m-%d %H:%M} UTC · {calibration.rounds} rounds × "
             f"{calibration.steps} steps · {calibration.settings.get('precision', '?')}")
    rows = []
    for time in sorted(calibration.times, key=lambda t: t.ms_per_step):
        ratio = calibration.ratio(time.optimizer, "adamw")
        rows.append([time.optimizer, time.ms_per_step, time.ms_std,
                     min(time.rounds_ms), max(time.rounds_ms),
                     "—" if ratio is None else ratio.text(), time.implementation])
    print_table(["optimizer", "ms/step", "std", "min", "max", "× AdamW (rounds' range)",
                 "implementation"], rows, title=title)
