"""Sample quality (engine/quality.py) on constructed cases, and stored with every finished run.

The metric tests use real solver trajectories: 8 of 10 states at 32² (64² simulated, block
means, as the data sets store them). The end-to-end tests train a toy U-Net for one epoch on
the shared quick data set and read the scores back from a real SQLite file (worker path) and
from the run folder of `diffbench train`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from diffbench.engine.config import Preset, PresetError, override
from diffbench.engine.dataset import load_split, simulate_trajectories
from diffbench.engine.metrics import read_jsonl
from diffbench.engine.quality import FLOOR_KEYS, QualityScores, assess, score, wasserstein_1
from diffbench.engine.statistics import flow_statistics
from diffbench.engine.unet import build_model
from diffbench.engine.vorticity import physical_vorticity

KEYS = {"spectrum_error", "vorticity_w1", "divergence_ratio", "dynamics_error",
        "unstable_fraction", "mean_flow", "std_ratio", "lag1_autocorrelation", "sin4y_amplitude",
        "trajectories", "length", "seconds", "reference", "sampler", "floor", "spectrum"}


@pytest.fixture(scope="module")
def flow(quick_preset) -> Preset:
    return override(quick_preset, {"data.size": 64, "data.factor": 2, "data.transitions": 14,
                                   "data.burn_in": 4})


@pytest.fixture(scope="module")
def halves(flow) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint sets of 4 trajectories (10 states at 32²) of the same flow."""
    x = simulate_trajectories(flow.data, list(range(8)), torch.device("cpu")).numpy()
    return x[:4], x[4:]


def grainy(x: np.ndarray, amplitude: float = 0.1) -> np.ndarray:
    """``x`` plus white noise kept only at wavenumbers |k| > N/4, ``amplitude`` × x's std."""
    noise = np.random.default_rng(0).standard_normal(x.shape)
    k = np.fft.fftfreq(x.shape[-1], 1 / x.shape[-1])
    high = np.hypot(*np.meshgrid(k, k, indexing="ij")) > x.shape[-1] / 4
    noise = np.fft.ifft2(np.fft.fft2(noise) * high).real
    return (x + amplitude * x.std() / noise.std() * noise).astype(np.float32)


# ----------------------------------------------------------------------------- metrics


def test_data_against_itself_scores_like_data(flow, halves):
    a, b = halves
    same = score(a, a, flow.data)
    assert same.spectrum_error == 0 and same.vorticity_w1 == 0
    assert same.divergence_ratio == pytest.approx(1, abs=1e-12)
    assert same.dynamics_error == pytest.approx(1, abs=1e-12)
    assert same.std_ratio == pytest.approx(1, abs=1e-12) and same.unstable_fraction == 0
    assert same.mean_flow < 1e-6  # the flow has no mean momentum
    other = score(a, b, flow.data)  # other trajectories of the same flow: close to "like data"
    assert other.spectrum_error < 0.35 and other.vorticity_w1 < 0.08  # E within ~1.3× per k
    assert 0.8 < other.divergence_ratio < 1.25 and 0.85 < other.dynamics_error < 1.15
    assert 0.9 < other.std_ratio < 1.1 and other.mean_flow < 1e-6
    assert other.lag1_autocorrelation == pytest.approx(other.reference["lag1_autocorrelation"],
                                                       abs=0.01)
    assert other.sin4y_amplitude == pytest.approx(other.reference["sin4y_amplitude"], rel=0.3)
    assert (other.trajectories, other.length) == (4, 10)
    assert set(other.to_dict()) == KEYS and other.floor is None and other.sampler == {}
    assert other.spectrum["k"] == list(range(1, 17))
    assert other.spectrum["data"] == pytest.approx(list(flow_statistics(b).spectrum))


def test_an_added_uniform_flow_moves_only_the_mean_flow_score(flow, halves):
    a, b = halves
    shifted = a.copy()
    shifted[:, :, 0] += 0.7
    shifted[:, :, 1] -= 0.3
    clean, moved = score(a, b, flow.data), score(shifted, b, flow.data)
    # RMS of the mean velocity over both components, in units of the data's velocity std
    expected = math.sqrt((0.7**2 + 0.3**2) / 2) / clean.reference["std"]
    assert moved.mean_flow == pytest.approx(expected, rel=1e-4)
    for key in ("spectrum_error", "vorticity_w1", "divergence_ratio", "dynamics_error",
                "std_ratio", "lag1_autocorrelation", "sin4y_amplitude"):
        assert getattr(moved, key) == pytest.approx(getattr(clean, key), rel=1e-5), key
    assert moved.unstable_fraction == clean.unstable_fraction == 0


def test_unstable_samples_give_a_finite_score_and_are_counted(flow, halves):
    """A trajectory 10⁴× the data's speed needs more refinement than allowed: its pairs are
    unstable and left out; one 3× the speed is advanced with refined steps (CFL-safe) and
    scores far from the data, but finite."""
    a, b = halves
    fast = a.copy()
    fast[0] *= 1e4
    fast[1] *= 3
    scores = score(fast, b, flow.data)
    assert scores.unstable_fraction == pytest.approx(1 / 4)
    assert math.isfinite(scores.dynamics_error) and scores.dynamics_error > 2
    stable = score(a[1:], b, flow.data)  # without the unstable trajectory: refined, finite
    assert stable.unstable_fraction == 0 and math.isfinite(stable.dynamics_error)


def test_refinement_keeps_the_data_step_for_data(flow, halves):
    """Real data need no refinement: e(d) is the solver's misfit at the data's own step."""
    from diffbench.engine.quality import _refinements

    a, _ = halves
    states = torch.from_numpy(a.reshape(-1, *a.shape[2:]))
    assert (_refinements(states, flow.data) == 0).all()
    assert (_refinements(states * 8, flow.data) >= 1).all()


def test_grainy_high_wavenumber_noise_scores_worse(flow, halves):
    a, b = halves
    clean, noisy = score(a, b, flow.data), score(grainy(a), b, flow.data)
    assert noisy.spectrum_error > 2.5 * clean.spectrum_error
    assert noisy.divergence_ratio > 2 * clean.divergence_ratio
    assert noisy.dynamics_error > 1.3
    k = np.array(noisy.spectrum["k"])
    excess = np.array(noisy.spectrum["generated"]) / np.array(noisy.spectrum["data"])
    assert excess[k > 12].min() > 2 and excess[k <= 4].max() < 1.5  # grain, not large scales


def test_time_shuffled_trajectories_fail_dynamics_only(flow, halves):
    a, b = halves
    order = [5, 0, 6, 1, 7, 2, 8, 3, 9, 4]  # every step jumps 5 or more states
    clean, shuffled = score(a, b, flow.data), score(a[:, order], b, flow.data)
    assert shuffled.dynamics_error > 4 * clean.dynamics_error
    # the same states in another order: every other score is unchanged
    assert shuffled.spectrum_error == pytest.approx(clean.spectrum_error, rel=1e-9)
    assert shuffled.vorticity_w1 == pytest.approx(clean.vorticity_w1, rel=1e-9)
    assert shuffled.divergence_ratio == pytest.approx(clean.divergence_ratio, rel=1e-9)
    assert shuffled.lag1_autocorrelation < clean.lag1_autocorrelation - 0.2  # decorrelated


def test_wasserstein_1_against_hand_computed_values():
    # F_a jumps to ½, ¾, 1 at 0, 1, 3; F_b to ½, 1 at 1, 2: ∫|F_a − F_b| = ½ + ¼ + ¼
    assert wasserstein_1(np.array([0.0, 0, 1, 3]), np.array([1.0, 2])) == pytest.approx(1.0)
    assert wasserstein_1(np.array([1.0, 2]), np.array([0.0, 0, 1, 3])) == pytest.approx(1.0)
    assert wasserstein_1(np.arange(5.0), np.arange(5.0) + 2.5) == pytest.approx(2.5)
    assert wasserstein_1(np.zeros(3), np.ones((2, 2))) == pytest.approx(1.0)


def test_scaled_fields_match_closed_forms(flow, halves):
    a, _ = halves
    doubled = score(2 * a, a, flow.data)
    # quantile coupling of ω and 2ω moves each value by |ω|: W1 = mean|ω|, then ÷ std(ω)
    omega = physical_vorticity(a.astype(np.float64))
    assert doubled.vorticity_w1 == pytest.approx(np.abs(omega).mean() / omega.std(), rel=1e-5)
    # E(k) scales by 4 at every k: the RMS log ratio is ln 4
    assert doubled.spectrum_error == pytest.approx(math.log(4), rel=1e-9)
    assert doubled.divergence_ratio == pytest.approx(1, rel=1e-9)  # scale-free
    assert doubled.std_ratio == pytest.approx(2, rel=1e-6)


def test_score_rejects_mismatched_grids(flow, halves):
    a, b = halves
    with pytest.raises(ValueError, match="same grid"):
        score(a[..., :16, :16], b, flow.data)
    with pytest.raises(ValueError, match=r"T ≥ 2"):
        score(a[:, :1], b, flow.data)


# ----------------------------------------------------------------------------- assess


def same_scores(a: QualityScores, b: QualityScores) -> bool:
    """Equal but for the time taken (NaN equal to NaN, as JSON writes them)."""
    def text(scores: QualityScores) -> str:
        return json.dumps(scores.to_dict() | {"seconds": 0}, sort_keys=True)

    return text(a) == text(b)


def test_assess_draws_only_from_its_generator(flow, halves):
    preset = override(flow, {"model.channels": [8, 16], "quality.trajectories": 2,
                             "quality.length": 6, "quality.steps": 4})
    torch.manual_seed(0)
    model = build_model(preset.model)
    state = torch.random.get_rng_state()
    runs = [assess(model, halves[1], preset.data, preset.quality,
                   generator=torch.Generator().manual_seed(5)).scores for _ in range(2)]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert isinstance(runs[0], QualityScores) and (runs[0].trajectories, runs[0].length) == (2, 6)
    assert same_scores(runs[0], runs[1])
    assert runs[0].seconds > 0
    # untrained: samples ~1000× the data's speed, beyond any refinement of the solver's step
    assert runs[0].unstable_fraction == 1 and math.isnan(runs[0].dynamics_error)
    assert runs[0].sampler == {"steps": 4, "corrections": 1, "tau": 0.5, "t_start": 1.0,
                               "remove_mean": False}


def test_assess_samples_in_fp32_and_scores_its_floor(flow, halves):
    """Under a run's bf16 autocast the samples are the fp32 ones; the floor is held-out data
    cut to the samples' size, scored against the same reference."""
    preset = override(flow, {"model.channels": [8, 16], "quality.trajectories": 2,
                             "quality.length": 6, "quality.steps": 3, "quality.t_start": 0.9,
                             "quality.remove_mean": True})
    torch.manual_seed(0)
    model = build_model(preset.model)
    a, b = halves

    def run() -> QualityScores:
        return assess(model, b, preset.data, preset.quality, floor=a,
                      generator=torch.Generator().manual_seed(5)).scores

    plain = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = run()
    assert same_scores(mixed, plain)
    floor = score(a[:2, :6], b, preset.data)
    assert plain.floor == pytest.approx({key: getattr(floor, key) for key in FLOOR_KEYS}, rel=1e-6)
    assert plain.sampler["t_start"] == 0.9 and plain.sampler["remove_mean"] is True
    # the exact ε̂ on the mean mode: the samples carry no mean flow even untrained
    assert plain.mean_flow < 1e-3


def test_quality_section_is_validated(quick_preset):
    with pytest.raises(PresetError, match=r"quality\.length \(3\) must be at least model\.window"):
        override(quick_preset, {"quality.length": 3})
    with pytest.raises(PresetError, match=r"quality\.enabled must be true or false"):
        override(quick_preset, {"quality.enabled": 1})
    with pytest.raises(PresetError, match=r"quality\.corrections must be non-negative"):
        override(quick_preset, {"quality.corrections": -1})
    with pytest.raises(PresetError, match=r"quality\.t_start must be in \(0, 1\]"):
        override(quick_preset, {"quality.t_start": 1.5})
    with pytest.raises(PresetError, match=r"quality\.remove_mean must be true or false"):
        override(quick_preset, {"quality.remove_mean": "yes"})


def test_presets_stored_before_the_sampler_keys_still_load(quick_preset):
    """A preset stored without t_start/remove_mean means SDA's sampler, as it did then."""
    table = quick_preset.to_dict()
    for key in ("t_start", "remove_mean"):
        del table["quality"][key]
    old = Preset.from_dict(table, name="old")
    assert (old.quality.t_start, old.quality.remove_mean) == (1.0, False)
    table["quality"].pop("tau")
    with pytest.raises(PresetError, match=r"missing key quality\.tau"):
        Preset.from_dict(table, name="old")


# ----------------------------------------------------------------------------- stored


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """One workspace for both runs: the first one to need the data set generates it."""
    return tmp_path_factory.mktemp("quality-home")


@pytest.fixture(scope="module")
def quick_toml(quick_preset, home) -> Path:
    """The quick preset with a toy U-Net, 1 epoch, as a preset file named ``qquick``."""
    from tests.helpers import preset_toml

    preset = override(quick_preset, {"model.channels": [8, 16], "train.batch_size": 4,
                                     "train.epochs": 1, "train.samples_every": 0})
    path = home.parent / "qquick.toml"
    path.write_text(preset_toml(preset))
    return path


def assert_stored(quality: dict, preset: Preset) -> None:
    """The report's shape. Two steps of training leave samples ~1000× the data's speed (the
    sampler divides by μ(1) = 1e-3): every pair is beyond the solver, dynamics is NaN."""
    assert set(quality) == KEYS
    for key in ("spectrum_error", "vorticity_w1", "divergence_ratio", "mean_flow", "std_ratio",
                "seconds"):
        assert isinstance(quality[key], float) and math.isfinite(quality[key]), key
    assert 0 <= quality["unstable_fraction"] <= 1
    assert (quality["trajectories"], quality["length"]) == (preset.quality.trajectories,
                                                           preset.quality.length)
    assert quality["sampler"] == preset.quality.sampler()
    assert set(quality["floor"]) == set(FLOOR_KEYS)
    size = preset.data.resolution
    assert quality["spectrum"]["k"] == list(range(1, size // 2 + 1))
    assert len(quality["spectrum"]["generated"]) == len(quality["spectrum"]["data"]) == size // 2


def test_worker_stores_quality_in_the_run_summary(quick_preset, quick_toml, home, tmp_path,
                                                  device):
    from diffbench.storage import queue, records
    from diffbench.storage.db import open_database
    from diffbench.storage.runs import RunSpec
    from diffbench.storage.workspace import Workspace
    from diffbench.tui.runner.worker import Worker

    db = open_database(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        [run_id] = queue.enqueue(db, [RunSpec(preset=str(quick_toml), optimizer="adamw",
                                              schedule="linear", lr=2e-3, weight_decay=0.0,
                                              seed=0)]).ids
        assert Worker(db, Workspace.resolve(home), device=device).serve(
            max_runs=1) == 0
        [run] = queue.list_runs(db)
    finally:
        db.dispose()
    assert run.id == run_id and run.status == "done", run
    assert_stored(run.summary["quality"], quick_preset)
    db = open_database(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:  # pictures of what was scored, beside the test data, for the report
        from diffbench.storage.results import last_sample_ids

        pictures = {name: records.get_sample(db, last_sample_ids(db, [run_id], name)[run_id])
                    for name in ("quality", "quality-data")}
    finally:
        db.dispose()
    size = quick_preset.data.resolution
    for sample in pictures.values():
        assert sample.array().shape[0] == pictures["quality-data"].array().shape[0] <= 2
        assert sample.array().shape[2:] == (size, size) and sample.array().shape[1] <= 5
    assert not np.array_equal(pictures["quality"].array(), pictures["quality-data"].array())


def test_cli_train_writes_quality_json(quick_preset, quick_toml, home, tmp_path, device):
    from diffbench.tui.cli import app
    from tests.helpers import data_file

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["--home", str(home), "train", "-p", str(quick_toml), "-O",
                                      "muon", "--device", device, "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    [row] = read_jsonl(out / "quality.json")
    with np.load(out / "samples" / "quality-data.npz") as data:
        states = data["velocity"].shape[1]
        test = load_split(data_file(home, quick_toml), "test")
        picks = np.unique(np.linspace(0, test.shape[1] - 1, 5).round().astype(int))
        count = min(2, quick_preset.quality.trajectories, len(test))
        assert np.array_equal(data["velocity"], test[:count, picks])
    assert np.load(out / "samples" / "quality.npz")["velocity"].shape[1] == states
    assert row["epoch"] == 1 and row["step"] > 0
    assert_stored(row["scores"], quick_preset)
    test_split = load_split(data_file(home, quick_toml), "test")
    expected = np.array(flow_statistics(test_split).spectrum)
    assert np.array(row["scores"]["spectrum"]["data"]) == pytest.approx(expected)
