"""A hand-built study with known numbers, written through `storage.queue` (the path a
worker takes), for the tests of the report's aggregation and of `diffbench report`.

Known answers (preset ``tiny``, 3 epochs, linear decay unless said):

- AdamW lr 1e-3 seeds 0, 1: finals 0.10, 0.12; lr 4.5e-4: 0.08, 0.10 → best 4.5e-4,
  0.09 ± 0.01414; 100 ms per step on cpu; mean curve 0.3, 0.15, 0.09 at 10, 20, 30 s.
- Muon lr 1e-3 seeds 0, 1: finals 0.07, 0.08 → 0.075 (−16.67 %), 150 ms per step (1.5×);
  mean curve 0.2, 0.09, 0.075 → reaches 0.09 at 20 s. Quality measured on seed 0 only.
- SGD lr 1e-2 seed 0: final 0.5 on cuda (no step ratio), never reaches 0.09 (∞).
- Muon lr 2e-3 seed 0 diverged, SGD lr 1e-1 seed 0 failed, AdamW cosine seed 5 queued.
- Loss by noise level (`EDGES`, 8 bins) on the best settings only: AdamW 4.5e-4 seeds 0, 1
  end at `ADAMW_BINS` and twice it → 1.5 × ADAMW_BINS ± 0.7071 × ADAMW_BINS; Muon 1e-3
  seeds 0, 1 both end at `MUON_BINS` (lower at small t, higher near t = 1) → std 0. Earlier
  epochs hold larger bins (scaled like the losses). SGD and AdamW 1e-3: none (old runs).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diffbench.storage import queue, records, workers
from diffbench.storage.db import Database
from diffbench.storage.runs import RunSpec

CPU = {"device": "cpu", "device_name": "x86_64"}
CUDA = {"device": "cuda:0", "device_name": "NVIDIA H100"}
EDGES = [0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99, 1.0]
ADAMW_BINS = [0.01, 0.012, 0.015, 0.02, 0.04, 0.08, 0.2, 1.5]
MUON_BINS = [0.005, 0.006, 0.008, 0.012, 0.03, 0.09, 0.3, 3.0]
SAMPLER = {"steps": 128, "corrections": 1, "tau": 0.5, "t_start": 0.9, "remove_mean": True}
FLOOR = {"spectrum_error": 0.1, "vorticity_w1": 0.04, "divergence_ratio": 1.0,
         "dynamics_error": 1.0, "std_ratio": 1.0, "mean_flow": 0.0}
QUALITY = {"spectrum_error": 0.2, "vorticity_w1": 0.05, "divergence_ratio": 1.1,
           "dynamics_error": 1.3, "unstable_fraction": 0.0, "mean_flow": 0.01,
           "std_ratio": 1.2, "lag1_autocorrelation": 0.96, "sin4y_amplitude": 0.7,
           "trajectories": 2, "length": 5, "seconds": 1.5,
           "reference": {"std": 0.9, "lag1_autocorrelation": 0.97, "sin4y_amplitude": 0.74,
                         "transition_error": 0.08},
           "sampler": SAMPLER, "floor": FLOOR,
           "spectrum": {"k": [1, 2, 3, 4], "generated": [1.0, 0.3, 0.1, 0.05],
                        "data": [1.0, 0.25, 0.08, 0.02]}}
#: Scores stored before the sampler settings were (old definitions; no sampler, no floor).
LEGACY_QUALITY = {"spectrum_error": 2.5, "vorticity_w1": 40.0, "divergence_ratio": 8.0,
                  "dynamics_error": float("inf"), "trajectories": 2, "length": 5,
                  "seconds": 1.0, "spectrum": {"k": [1, 2], "generated": [9.0, 9.0],
                                               "data": [1.0, 0.25]}}


def add_run(db: Database, worker_id: int, *, optimizer: str, lr: float, seed: int,
            losses: list[float] | None = None, ms: float = 100.0,
            device: dict[str, str] = CPU, status: str = "done", schedule: str = "linear",
            preset: str = "tiny", epochs: int = 3, quality: dict[str, Any] | None = None,
            sample: bool = False, bins: list[float] | None = None) -> int:
    """Queue, claim and finish one run with the given validation curve (10 s per epoch)
    and, with ``bins``, per-bin losses on `EDGES` ending at ``bins``, stored as the worker
    stores them (edges in provenance and summary, the last epoch's bins in the summary)."""
    (run_id,) = queue.enqueue(db, [RunSpec(preset, optimizer, schedule, lr, 0.01, seed,
                                           epochs=epochs)]).ids
    if status == "queued":
        return run_id
    claimed = queue.claim_next(db, worker_id)
    assert claimed is not None and claimed.id == run_id
    queue.record_start(db, run_id, worker_id,
                       provenance={**device, "loss_bins": EDGES} if bins else device)
    losses = losses or []
    records.add_epoch_metrics(db, run_id, [
        {"epoch": e, "step": 10 * (e + 1), "train_loss": loss, "valid_loss": loss,
         "fixed_valid_loss": loss, "epoch_s": 10.0, "valid_s": 1.0, "sample_s": 0.0,
         "train_s": 10.0 * (e + 1),
         "fixed_valid_bins": [b * loss / losses[-1] for b in bins] if bins else None}
        for e, loss in enumerate(losses)])
    if sample:
        states = np.linspace(-1, 1, 4 * 5 * 8 * 8, dtype=np.float32).reshape(4, 5, 8, 8)
        records.add_sample(db, run_id, epoch=len(losses) - 1, step=10 * len(losses),
                           array=states * (1 + seed))
    summary: dict[str, Any] = {"ms_per_step": ms, "train_s": 10.0 * len(losses)}
    if quality is not None:
        summary["quality"] = quality
    if bins:
        summary.update(final_fixed_valid_bins=bins, loss_bins=EDGES)
    queue.finish(db, run_id, worker_id, status, summary=summary,
                 error="boom" if status == "failed" else None)
    return run_id


def build_study(db: Database) -> dict[str, int]:
    """The study of the module docstring; the run ids by name."""
    worker = workers.register_worker(db, host="test", pid=1, device="cpu").id
    ids = {
        "adamw_hi_0": add_run(db, worker, optimizer="adamw", lr=1e-3, seed=0,
                              losses=[0.3, 0.2, 0.10]),
        "adamw_hi_1": add_run(db, worker, optimizer="adamw", lr=1e-3, seed=1,
                              losses=[0.3, 0.2, 0.12]),
        "adamw_0": add_run(db, worker, optimizer="adamw", lr=4.5e-4, seed=0,
                           losses=[0.3, 0.15, 0.08], sample=True, bins=ADAMW_BINS),
        "adamw_1": add_run(db, worker, optimizer="adamw", lr=4.5e-4, seed=1,
                           losses=[0.3, 0.15, 0.10], bins=[2 * b for b in ADAMW_BINS]),
        "muon_0": add_run(db, worker, optimizer="muon", lr=1e-3, seed=0, ms=150.0,
                          losses=[0.2, 0.085, 0.07], quality=QUALITY, sample=True,
                          bins=MUON_BINS),
        "muon_1": add_run(db, worker, optimizer="muon", lr=1e-3, seed=1, ms=150.0,
                          losses=[0.2, 0.095, 0.08], bins=MUON_BINS),
        "sgd_0": add_run(db, worker, optimizer="sgd", lr=1e-2, seed=0, ms=20.0, device=CUDA,
                         losses=[0.9, 0.7, 0.5]),
        "muon_diverged": add_run(db, worker, optimizer="muon", lr=2e-3, seed=0,
                                 losses=[0.2, float("nan")], status="diverged"),
        "sgd_failed": add_run(db, worker, optimizer="sgd", lr=1e-1, seed=0, status="failed"),
        "adamw_queued": add_run(db, worker, optimizer="adamw", lr=1e-3, seed=5,
                                schedule="cosine", status="queued"),
    }
    return ids
