"""`diffbench train`: one training run without the queue, with a live display on stderr.

The run and its folder are `runner.foreground`'s (the folder's files are listed there); the
data set is the recipe's workspace file (``<home>/data/<preset>.h5``, or
``<preset>-<hash8>.h5`` for another recipe: `engine.config.dataset_name`), generated first
when missing, under the lock workers take for it (`runner.provision`). This module checks
the input, prints how the run ended and picks the exit code.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from diffbench.engine.vocabulary import (
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    lr_problem,
    unknown,
    weight_decay_problem,
)
from diffbench.storage.workspace import Workspace

from ..errors import (
    EXIT_INTERRUPTED,
    UserError,
    error_console,
    fail,
    require,
    require_writable,
    user_errors,
)
from ..runner.foreground import CONFIG

if TYPE_CHECKING:
    from diffbench.engine.config import Preset
    from diffbench.engine.run_config import RunConfig


def train(
    ctx: typer.Context,
    preset: Annotated[str | None, typer.Option(
        "--preset", "-p", help="Preset name (tiny, small, paper) or a path to a preset .toml.",
        show_default=False)] = None,
    optimizer: Annotated[str | None, typer.Option(
        "--optimizer", "-O", help=f"One of {', '.join(OPTIMIZERS)}.", show_default=False)] = None,
    schedule: Annotated[str, typer.Option(
        "--schedule", "-S", help=f"One of {', '.join(SCHEDULES)} (all with linear warm-up; "
        "schedulefree takes none).")] = "linear",
    lr: Annotated[float | None, typer.Option(
        "--lr", help="Peak learning rate. Default: the preset's best for the optimizer.",
        show_default=False)] = None,
    wd: Annotated[float | None, typer.Option(
        "--wd", help="Weight decay. Default: the preset's best for the optimizer.",
        show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", "-s", help="Run seed (model, windows, noise).")
                    ] = 0,
    epochs: Annotated[int | None, typer.Option(
        "--epochs", "-e", help="Override the preset's epochs.", show_default=False)] = None,
    device: Annotated[str, typer.Option(
        "--device", "-d", envvar="DIFFBENCH_DEVICE",
        help="auto (CUDA when present), cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option(
        "--precision", help="fp32 (TF32 matmuls on CUDA) or bf16 autocast.")] = "fp32",
    deterministic: Annotated[bool, typer.Option(
        "--deterministic", help="torch.use_deterministic_algorithms (slower on CUDA).")] = False,
    channels_last: Annotated[bool, typer.Option(
        "--channels-last/--no-channels-last", help="NHWC activations and weights (faster "
        "convolutions on CPUs and GPUs).")] = True,
    compile: Annotated[bool | None, typer.Option(
        "--compile/--no-compile", help="torch.compile the model and loss. Default: where it "
        "pays (CUDA; on a CPU, U-Nets of 1M+ parameters over 1,000+ steps: compiling takes "
        "minutes there); compile time is reported apart.",
        show_default=False)] = None,
    cuda_graph: Annotated[bool, typer.Option(
        "--cuda-graph/--no-cuda-graph", help="Replay the compiled forward and backward as "
        "CUDA graphs (torch.compile's reduce-overhead mode; needs --compile, does nothing "
        "on a CPU).")] = False,
    checkpoint_every: Annotated[int | None, typer.Option(
        "--checkpoint-every", metavar="EPOCHS", help="Epochs between resume checkpoints "
        "(default: the preset's; always at the end and at Ctrl-C). Written in the "
        "background.", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", metavar="DIR", help="Run folder. Default: "
        "<home>/runs/<preset>-<optimizer>-<schedule>-lr<lr>-wd<wd>-s<seed>-<time>.",
        show_default=False)] = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", metavar="DIR", help="Continue the run in DIR from its last checkpoint "
        "(takes no other option).", show_default=False)] = None,
) -> None:
    """Train the score U-Net with one optimizer and schedule; write a run folder.

    Shows epoch, losses, lr and the step time split (data + forward/backward +
    optimizer) live on stderr. The preset's data set is generated first if missing.
    Ctrl-C checkpoints after the current step and exits with code 130;
    [bold]--resume[/] continues bit-exactly. A run that diverges (non-finite loss or
    gradient norm) stops there, records it and exits 0: divergence is a result.

    [bold]Examples[/]

      diffbench train --preset tiny --optimizer adamw
      diffbench train -p tiny -O muon --schedule wsd --lr 1e-3 --wd 0.032 --seed 1
      diffbench train -p paper -O soap --precision bf16 --device cuda --out runs/soap
      diffbench train -p tiny -O adamw --compile --checkpoint-every 10
      diffbench train --resume runs/soap
    """
    workspace: Workspace = ctx.obj
    if resume is not None:
        given = {"--preset": preset, "--optimizer": optimizer, "--lr": lr, "--wd": wd,
                 "--epochs": epochs, "--out": out, "--checkpoint-every": checkpoint_every}
        extra = [name for name, value in given.items() if value is not None]
        with user_errors():
            require(not extra, f"--resume takes no other option (got {', '.join(extra)})")
        _resume(resume)
        return
    _train(workspace, preset=preset, optimizer=optimizer, schedule=schedule, lr=lr, wd=wd,
           seed=seed, epochs=epochs, device=device, precision=precision,
           deterministic=deterministic, channels_last=channels_last, compile=compile,
           cuda_graph=cuda_graph, checkpoint_every=checkpoint_every, out=out)


def _train(workspace: Workspace, *, preset: str | None, optimizer: str | None, schedule: str,
           lr: float | None, wd: float | None, seed: int, epochs: int | None, device: str,
           precision: str, deterministic: bool, channels_last: bool, compile: bool | None,
           cuda_graph: bool, checkpoint_every: int | None, out: Path | None) -> None:
    """Check the options, resolve the run and its folder, provide the data set, train."""
    with user_errors():
        require(preset is not None, "--preset is required (or --resume DIR)")
        require(optimizer is not None, "--optimizer is required; "
                f"one of {', '.join(OPTIMIZERS)}")
        for problem in (unknown("optimizer", optimizer, OPTIMIZERS),
                        unknown("schedule", schedule, SCHEDULES),
                        unknown("precision", precision, PRECISIONS),
                        None if lr is None else lr_problem(lr, "--lr"),
                        None if wd is None else weight_decay_problem(wd, "--wd")):
            require(problem is None, str(problem))
        require(seed >= 0, f"--seed must be non-negative, got {seed}")
        require(epochs is None or epochs > 0, f"--epochs must be positive, got {epochs}")
        require(checkpoint_every is None or checkpoint_every > 0,
                f"--checkpoint-every must be positive, got {checkpoint_every}")

    from diffbench.engine.config import PresetError, dataset_name, load_preset, override
    from diffbench.engine.device import DeviceError, resolve_device
    from diffbench.engine.run_config import RunConfig, RunError, default_hyperparameters

    with user_errors(PresetError, RunError, DeviceError):
        config = load_preset(preset)
        changes = {"train.epochs": epochs, "train.checkpoint_every": checkpoint_every}
        changes = {key: value for key, value in changes.items() if value is not None}
        if changes:
            config = override(config, changes)
        if lr is None or wd is None:
            best_lr, best_wd = default_hyperparameters(config, optimizer)
            lr, wd = (best_lr if lr is None else lr), (best_wd if wd is None else wd)
        run = RunConfig(preset=config, optimizer=optimizer, lr=lr, weight_decay=wd,
                        schedule=schedule, seed=seed, device=device, precision=precision,
                        deterministic=deterministic, channels_last=channels_last,
                        compile=compile, cuda_graph=cuda_graph)
        resolve_device(device)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = (out if out is not None else
                  workspace.root / "runs" / f"{run.name}-{stamp}").expanduser().absolute()
        require(not (folder / CONFIG).exists(),
                f"{folder} already holds a run; continue it with --resume {folder}")
        require(not folder.is_file(), f"--out {folder} is a file")
        data_path = workspace.dataset_path(dataset_name(config))
    with user_errors():
        require_writable(folder)
    _provide(config, data_path, device)
    _execute(run, folder, data_path, resume=False)


def _resume(folder: Path) -> None:
    """Continue the run saved in ``folder`` from its last checkpoint."""
    from diffbench.engine.config import PresetError
    from diffbench.engine.run_config import RunError

    from ..runner.foreground import saved_run

    folder = folder.expanduser().absolute()
    with user_errors(PresetError, RunError):
        require((folder / CONFIG).is_file(), f"{folder} is not a run folder (no {CONFIG})")
        try:
            run, data_path = saved_run(folder)
        except (ValueError, KeyError, TypeError) as error:
            raise UserError(f"{folder / CONFIG}: unreadable run config ({error})") from None
        require(data_path.exists(), f"the run's data set {data_path} no longer exists")
    _execute(run, folder, data_path, resume=True)


def _provide(preset: Preset, path: Path, device: str) -> None:
    """Generate the data set if it is missing; Ctrl-C keeps the finished chunks."""
    from diffbench.engine.dataset import DatasetError
    from diffbench.engine.device import DeviceError

    from ..runner.provision import provide_dataset

    err = error_console()
    try:
        with user_errors(DeviceError, DatasetError):
            provide_dataset(preset, path, device, err)
    except KeyboardInterrupt:
        err.print(f"interrupted; finished chunks are kept in {path}.partial", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _execute(run: RunConfig, folder: Path, data_path: Path, *, resume: bool) -> None:
    """Train in the foreground; say how it ended, and exit 130 when Ctrl-C ended it."""
    from diffbench.engine.checkpoint import CheckpointError, CheckpointWriteError
    from diffbench.engine.dataset import DatasetError
    from diffbench.engine.device import DeviceError

    from ..runner.foreground import open_run, train_in_folder

    err = error_console()
    try:
        with user_errors(DatasetError, DeviceError, CheckpointError):
            trainer = open_run(run, folder, data_path, resume=resume)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if resume and trainer.resumed_from is None:
        err.print(f"{folder} has no checkpoint yet; starting it from step 0", markup=False)
    try:
        outcome = train_in_folder(trainer, folder, err)
    except CheckpointWriteError as error:  # e.g. a full disk: the previous one is kept
        raise fail(f"{error}; free space, then: diffbench train --resume {folder}") from None
    except KeyboardInterrupt:  # a second Ctrl-C
        err.print(f"interrupted; resume from the last checkpoint with: diffbench train "
                  f"--resume {folder}", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if outcome.status == "interrupted":
        err.print(f"interrupted at step {outcome.step}; checkpoint saved. Resume with: "
                  f"diffbench train --resume {folder}", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED)
    typer.echo(f"{folder}: {outcome.status} at step {outcome.step} of {outcome.total_steps}")
