"""The trainer: epochs of random windows, timed steps, validation, previews, exact resume.

`Trainer` is a generator of `metrics` records (sda's ``loop()`` yields its losses the same
way): the caller decides where they go and never has to know how a step is made.

One step (spec §4)::

    data        x = next window batch                      (the sampler's generator)
    compute     t, ε = draw_noise(x, noise)                (the trainer's noise generator)
                loss = noise_loss(model, x, t, ε)          (torch.compile'd where it pays)
                loss.backward(); g = ‖∇‖ (logged); clip to grad_clip   — before step(), since
                                                           some optimizers rewrite .grad
    optimizer   lr_i = initial_lr_i · lr_multiplier(schedule, step, total, warm-up)
                optimizer.step()                           (schedulefree: no external lr)

Timing is honest (modded-nanogpt): on CUDA each phase is bracketed by events that are read a
batch of steps at a time (no host sync per step), and the clock of training time stops for
validation, previews and checkpoints, which are timed apart (a checkpoint costs the training
thread only a copy of its state: `CheckpointWriter` writes it in the background, and its
record comes once the file is on disk). Compilation happens before the first step, for every
batch shape of an epoch, and is reported apart (``compile_s`` in the provenance). A
non-finite loss or gradient norm stops the run as ``diverged`` at that step (on CUDA it is
noticed at the next read-out, and the records end at the first bad step).

Validation, previews and the finished run's sample quality are `evaluation.Evaluation`'s:
whole trajectories generated from a fixed noise seed, scored against the test split, timed
apart from training, drawn from their own generator. A run stopped (`request_stop`) or killed
during the assessment resumes from its last checkpoint, after the last epoch, and assesses again.

Resume is exact: a checkpoint (engine/checkpoint.py) holds every state a step reads, so a run
killed at any point and resumed from its last checkpoint takes bit-identical steps on the CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import rng
from .backends import (
    autocast,
    compile_loss,
    compile_pays_off,
    configure_backends,
    durations,
    event,
    sync_time,
)
from .checkpoint import CheckpointWriter, resume_checkpoint, save_weights
from .device import resolve_device
from .diffusion import LOSS_BINS, draw_noise, noise_loss
from .evaluation import Evaluation
from .metrics import (
    CheckpointRecord,
    EpochRecord,
    Record,
    SampleRecord,
    StartRecord,
    StatusRecord,
    StepRecord,
    Steps,
)
from .optimizers import (
    build_optimizer,
    optimizer_implementation,
    set_eval_mode,
    set_train_mode,
    uses_external_schedule,
)
from .quality import AssessmentStopped
from .run import TrainingData, provenance
from .run_config import RunConfig
from .schedules import lr_multiplier
from .unet import build_model
from .vorticity import vorticity
from .windows import WindowSampler

# No-grad passes keep no activations for a backward: on CUDA the sampler's windows go through
# the model this many training batches at a time (fewer, fuller launches; same numbers).
EVAL_BATCHES = 8


class Trainer:
    """One run of ``config`` on ``data``; iterate it for records.

    ``folder``: where checkpoints go (``latest.json`` + ``step-*.pt``) and the final weights
    (``model.pt``, ScheduleFree's averaged ones); None keeps nothing on disk.
    ``resume``: continue from the folder's latest usable checkpoint (`resume_checkpoint`).
    ``checkpoint_steps``: also checkpoint every this many steps (tests of exact resume).
    """

    def __init__(self, config: RunConfig, data: TrainingData, folder: Path | None = None, *,
                 resume: bool = False, checkpoint_steps: int | None = None,
                 flush_every: int = 64) -> None:
        self.config, self.data = config, data
        self.folder = None if folder is None else Path(folder)
        self.checkpoint_steps, self.flush_every = checkpoint_steps, flush_every
        self.device = resolve_device(config.device)
        self.cuda = self.device.type == "cuda"
        configure_backends(self.device, config)
        preset, train, seed = config.preset, config.preset.train, config.seed

        rng.seed_globals(rng.derive_seed(seed, "global"))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(rng.derive_seed(seed, "model"))
            self.model = build_model(preset.model)
        self.model.to(self.device)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)

        self.sampler = WindowSampler(data.train.to(self.device), train.batch_size,
                                     window=preset.model.window,
                                     seed=rng.derive_seed(seed, "windows"))
        self.valid_windows = WindowSampler(data.valid.to(self.device), len(data.valid),
                                           window=preset.model.window,
                                           seed=rng.derive_seed(seed, "valid-windows"))
        self.generators = {"noise": rng.seeded(rng.derive_seed(seed, "noise"), self.device),
                           "valid": rng.seeded(rng.derive_seed(seed, "valid"), self.device)}

        self.epoch_steps = self.sampler.epoch_steps
        self.total_steps = train.epochs * self.epoch_steps
        self.warmup_steps = train.warmup_epochs * self.epoch_steps
        self.external_schedule = uses_external_schedule(config.optimizer)
        options = dict(config.options)
        if not self.external_schedule:
            options.setdefault("warmup_steps", self.warmup_steps)
        self.optimizer = build_optimizer(self.model, config.optimizer, config.lr,
                                         config.weight_decay, **options)
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        set_train_mode(self.optimizer)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.compiled = (config.compile if config.compile is not None else
                         compile_pays_off(self.device, self.model, self.total_steps))
        self.graphed = self.compiled and config.cuda_graph
        self._loss = (compile_loss(self._model_loss, self.graphed) if self.compiled
                      else self._model_loss)
        self.compile_s = 0.0
        eval_batch = train.batch_size * (EVAL_BATCHES if self.cuda else 1)
        self.evaluation = Evaluation(self.model, self.optimizer, config, data, self.device,
                                     self.valid_windows, self.generators["valid"],
                                     batch_size=eval_batch)
        self.writer = (None if self.folder is None
                       else CheckpointWriter(self.folder / "checkpoints", keep=2))

        self.step = 0  # steps taken
        self.epoch = 0  # epochs completed
        self.epoch_losses: list[float] = []  # losses of the current epoch's read-out steps
        self.times = {"train": 0.0, "epoch": 0.0, "valid": 0.0, "sample": 0.0}
        self._pending: list[tuple[int, float, Tensor, Tensor, tuple]] = []
        self._stop, self.warming_up = False, self.compiled  # until `warm_up` has compiled
        self.resumed_from, self.skipped = None, ()  # its checkpoint; why newer ones were not
        resumed = resume_checkpoint(self.folder / "checkpoints") if resume and folder else None
        if resumed is not None:
            self.load_state(resumed.state)
            self.resumed_from, self.skipped = resumed.path, resumed.skipped

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs (see engine/checkpoint.py); ScheduleFree in train
        mode, which is the mode the trainer keeps between steps."""
        return {
            "config": self.config.to_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "valid_windows": self.valid_windows.state_dict(),
            "rng": {"global": rng.global_state(),
                    "generators": rng.generator_states(self.generators)},
            "epoch_losses": list(self.epoch_losses),
            "times": dict(self.times),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        # The device and compilation may differ (another worker resumes the run); nothing
        # else may. The saved config is read as a stored one (keys added since take defaults).
        saved = RunConfig.from_dict(state["config"]).to_dict()
        mine = self.config.to_dict()
        for key in ("device", "compile", "cuda_graph"):
            saved.pop(key)
            mine.pop(key)
        if saved != mine:
            raise ValueError("the checkpoint belongs to a run of another configuration")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.valid_windows.load_state_dict(state["valid_windows"])
        rng.set_global_state(state["rng"]["global"])
        rng.set_generator_states(self.generators, state["rng"]["generators"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.epoch_losses = list(state["epoch_losses"])
        self.times = dict(state["times"])

    def request_stop(self) -> None:
        """Checkpoint after the current step and end with status ``interrupted`` (Ctrl-C).
        While `warming_up` (compiling, nothing new to save) a caller may abandon the run."""
        self._stop = True

    # ------------------------------------------------------------------ the run

    def __iter__(self) -> Iterator[Record]:
        return self.run()

    def run(self) -> Iterator[Record]:
        train = self.config.preset.train
        if self.compiled:
            self.compile_s = self.warm_up()
            self.warming_up = False
        yield StartRecord(step=self.step, epoch=self.epoch, total_steps=self.total_steps,
                          epoch_steps=self.epoch_steps, config=self.config.to_dict(),
                          provenance={**provenance(self.config, self.device, self.model,
                                                   optimizer_implementation(self.optimizer),
                                                   self.data),
                                      "compile": self.compiled, "cuda_graph": self.graphed,
                                      "compile_s": self.compile_s,
                                      "loss_bins": list(LOSS_BINS),
                                      **({"skipped_checkpoints": list(self.skipped)}
                                         if self.skipped else {})})
        self.model.train()
        while self.epoch < train.epochs:
            began = sync_time(self.device)
            batches = iter(self.sampler)
            while True:
                # A stop after an epoch's last step waits for the epoch to close: the sampler
                # has already moved on, so a checkpoint taken here would resume one epoch late.
                if self._stop and self.sampler.epoch == self.epoch:
                    yield from self._interrupt(began)
                    return
                if not self._take_step(batches):
                    break
                bad = self._nonfinite_now() if not self.cuda else None
                if bad is None and len(self._pending) >= self.flush_every:
                    bad = yield from self._flush()
                if bad is not None:
                    yield from self._diverge(bad)
                    return
                if self.checkpoint_steps and self.step % self.checkpoint_steps == 0 \
                        and self.sampler.step != 0 and self.folder is not None:
                    bad = yield from self._flush()
                    if bad is not None:
                        yield from self._diverge(bad)
                        return
                    began = yield from self._checkpoint(began)
            self.times["epoch"] += sync_time(self.device) - began
            bad = yield from self._flush()
            if bad is not None:
                yield from self._diverge(bad)
                return
            yield from self._end_epoch()
        yield from self._written(wait=True)
        set_eval_mode(self.optimizer)
        if self.folder is not None:
            save_weights(self.folder / "model.pt", self.model.state_dict())
        try:
            yield from self.evaluation.quality(self.epoch, self.step, lambda: self._stop)
        except AssessmentStopped:
            yield StatusRecord("interrupted", self.epoch, self.step, "stopped while assessing")
            return
        yield StatusRecord("done", self.epoch, self.step, f"{self.epoch} epochs")

    def _take_step(self, batches: Iterator[Tensor]) -> bool:
        """One optimizer step; False when the epoch has no batch left."""
        clock = event if self.cuda else time.perf_counter
        start = clock()
        x = next(batches, None)
        if x is None:
            return False
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loaded = clock()
        self.optimizer.zero_grad(set_to_none=True)
        t, eps = draw_noise(x, self.generators["noise"])
        if self.graphed:
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(self.device, self.config.precision):
            loss = self._loss(x, t, eps)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.config.preset.train.grad_clip)
        computed = clock()
        if self.external_schedule:
            factor = lr_multiplier(self.config.schedule, self.step, self.total_steps,
                                   self.warmup_steps, self.config.preset.train.cooldown)
            for group in self.optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor
        self.optimizer.step()
        stepped = clock()
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.step += 1
        if self.graphed:  # the graph's next replay overwrites its output
            loss = loss.detach().clone()
        self._pending.append((self.step, lr, loss.detach(), norm.detach(),
                              (start, loaded, computed, stepped)))
        return True

    def _nonfinite_now(self) -> int | None:
        """On the CPU the newest step is checked at once (reading it costs nothing)."""
        step, _, loss, norm, _ = self._pending[-1]
        return None if math.isfinite(loss.item()) and math.isfinite(norm.item()) else step

    def _flush(self) -> Iterator[Record]:
        """Read out pending steps as one `Steps` record; the first non-finite step or None."""
        if not self._pending:
            return None
        pending, self._pending = self._pending, []
        if self.cuda:
            pending[-1][4][-1].synchronize()
        losses = torch.stack([p[2].float() for p in pending]).tolist()
        norms = torch.stack([p[3].float() for p in pending]).tolist()
        records, bad = [], None
        for (step, lr, _, _, marks), loss, norm in zip(pending, losses, norms, strict=True):
            data_ms, compute_ms, optimizer_ms = durations(marks)
            records.append(StepRecord(step=step, epoch=self.epoch, loss=loss, lr=lr,
                                      grad_norm=norm, data_ms=data_ms, compute_ms=compute_ms,
                                      optimizer_ms=optimizer_ms))
            if not (math.isfinite(loss) and math.isfinite(norm)):
                bad = step
                break
            self.epoch_losses.append(loss)
        yield Steps(tuple(records))
        return bad

    def _diverge(self, step: int) -> Iterator[Record]:
        if self._pending:  # the CPU path stops before a read-out: the steps up to `step`
            yield from self._flush()
        yield from self._written(wait=True)
        yield StatusRecord("diverged", self.epoch, step,
                           f"non-finite loss or gradient norm at step {step}")

    def _interrupt(self, began: float) -> Iterator[Record]:
        self.times["epoch"] += sync_time(self.device) - began
        bad = yield from self._flush()
        if bad is not None:
            yield from self._diverge(bad)
            return
        if self.folder is not None:
            yield from self._checkpoint(None)
            yield from self._written(wait=True)
        yield StatusRecord("interrupted", self.epoch, self.step,
                           f"stopped after step {self.step}; resume from the checkpoint")

    def _end_epoch(self) -> Iterator[Record]:
        train = self.config.preset.train
        epoch, last = self.epoch, self.epoch + 1 == train.epochs
        if self.writer is not None:  # a failed background write ends the run now
            self.writer.check()
        self.times["train"] += self.times["epoch"]
        valid = fixed = bins = None
        valid_s = sample_s = 0.0
        if (epoch + 1) % train.valid_every == 0 or last:
            began = sync_time(self.device)
            valid, fixed, bins = self.evaluation.validate()
            valid_s = sync_time(self.device) - began
        sample = None
        if train.samples_every and ((epoch + 1) % train.samples_every == 0 or last):
            began = sync_time(self.device)
            velocity = self.evaluation.preview(train.sample_count, train.sample_steps)
            sample_s = sync_time(self.device) - began
            sample = SampleRecord(epoch=epoch, step=self.step, velocity=velocity,
                                  vorticity=vorticity(velocity).astype("float32"),
                                  seconds=sample_s)
        losses = self.epoch_losses
        yield EpochRecord(epoch=epoch, step=self.step,
                          train_loss=sum(losses) / len(losses) if losses else math.nan,
                          valid_loss=valid, fixed_valid_loss=fixed, fixed_valid_bins=bins,
                          epoch_s=self.times["epoch"], valid_s=valid_s, sample_s=sample_s,
                          train_s=self.times["train"])
        if sample is not None:
            yield sample
        self.times["valid"] += valid_s
        self.times["sample"] += sample_s
        self.times["epoch"] = 0.0
        self.epoch_losses = []
        self.epoch += 1
        if self.folder is not None and (self.epoch % train.checkpoint_every == 0 or last):
            yield from self._checkpoint(None)

    def _checkpoint(self, began: float | None) -> Iterator[Record]:
        """Hand the state to the writer (timed apart from training: the copy, and the wait
        for a write still in flight); returns the restarted training clock."""
        if began is not None:
            self.times["epoch"] += sync_time(self.device) - began
        self.writer.submit(self.state())
        yield from self._written()
        return sync_time(self.device)

    def _written(self, wait: bool = False) -> Iterator[Record]:
        """A `CheckpointRecord` per checkpoint on disk since the last call (after the write
        in flight when ``wait``): a record always names a file that exists."""
        if self.writer is None:
            return
        if wait:
            self.writer.wait()
        for done in self.writer.written():
            yield CheckpointRecord(epoch=done.epoch, step=done.step, path=str(done.path),
                                   seconds=done.blocking_s, write_s=done.write_s)

    # ------------------------------------------------------------------ compute

    def _model_loss(self, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """The training loss of clean ``x`` with noise drawn outside (what gets compiled)."""
        return noise_loss(self.model, x, t, eps)

    def warm_up(self) -> float:
        """Compile the loss and its backward for every batch shape of an epoch, on zeros,
        before training: no generator draws, no parameter changes (the gradients are thrown
        away), so the run's numbers are those it would have had. Returns the seconds."""
        began = sync_time(self.device)
        n, batch = len(self.sampler.data), self.sampler.batch_size
        shape = self.sampler.data.shape
        memory = torch.channels_last if self.config.channels_last else torch.contiguous_format
        for size in sorted({min(batch, n), n % batch} - {0}):
            x = torch.zeros(size, 2 * self.sampler.window, *shape[-2:], device=self.device)
            x = x.contiguous(memory_format=memory)
            t = torch.zeros(size, device=self.device)
            if self.graphed:
                torch.compiler.cudagraph_mark_step_begin()
            with autocast(self.device, self.config.precision):
                loss = self._loss(x, t, x)
            loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        return sync_time(self.device) - began
