"""storage/results.py: the report's aggregation on a hand-built database with known answers
(tests/results_db.py), and its pure functions on constructed values."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from diffbench.storage import published, results, sample_quality
from diffbench.storage.db import open_database
from diffbench.storage.filters import RunFilter
from diffbench.storage.published import Published, compare_published
from diffbench.storage.results import (
    CurvePoint,
    RunResult,
    mean_curve,
    mean_std,
    settings,
    time_to_target,
)
from tests.results_db import (
    ADAMW_BINS,
    EDGES,
    FLOOR,
    LEGACY_QUALITY,
    MUON_BINS,
    QUALITY,
    SAMPLER,
    build_study,
)


@pytest.fixture
def study(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'jobs.db'}")
    ids = build_study(db)
    yield db, ids
    db.dispose()


def by_optimizer(rows):
    return {(r.optimizer, r.schedule): r for r in rows}


def test_best_setting_mean_std_and_baseline(study):
    db, ids = study
    rows = by_optimizer(results.summarize(results.load_runs(db)))
    assert set(rows) == {("adamw", "linear"), ("muon", "linear"), ("sgd", "linear")}
    adamw, muon, sgd = rows["adamw", "linear"], rows["muon", "linear"], rows["sgd", "linear"]
    assert adamw.best.first.lr == pytest.approx(4.5e-4)
    assert [r.id for r in adamw.best.runs] == [ids["adamw_0"], ids["adamw_1"]]
    assert adamw.best.mean == pytest.approx(0.09)
    assert adamw.best.std == pytest.approx(math.sqrt(2) * 0.01)
    assert len(adamw.settings) == 2  # both lrs kept for the lr figure
    assert muon.best.mean == pytest.approx(0.075)
    assert muon.vs_baseline_pct == pytest.approx(100 * (0.075 / 0.09 - 1))
    assert adamw.vs_baseline_pct == pytest.approx(0.0)
    assert sgd.best.seeds == 1 and sgd.best.std is None
    assert muon.baseline == adamw.best


def test_step_ratio_only_on_the_same_device(study):
    db, _ = study
    rows = by_optimizer(results.summarize(results.load_runs(db)))
    assert rows["muon", "linear"].step_ratio == pytest.approx(1.5)
    assert rows["muon", "linear"].step_device == "cpu · x86_64"
    assert rows["adamw", "linear"].step_ratio == pytest.approx(1.0)
    assert rows["sgd", "linear"].step_ratio is None  # ran on cuda, AdamW on cpu


def test_time_to_adamw_final_loss(study):
    db, _ = study
    rows = by_optimizer(results.summarize(results.load_runs(db)))
    assert rows["muon", "linear"].time_to_target_s == pytest.approx(20.0)
    assert rows["adamw", "linear"].time_to_target_s == pytest.approx(30.0)
    assert rows["sgd", "linear"].time_to_target_s == math.inf


def test_quality_means_over_measured_seeds(study):
    db, _ = study
    rows = by_optimizer(results.summarize(results.load_runs(db)))
    muon = rows["muon", "linear"]
    assert muon.quality_seeds == 1
    assert muon.quality == {"std_ratio": 1.2, "mean_flow": 0.01, "spectrum_error": 0.2,
                            "vorticity_w1": 0.05, "divergence_ratio": 1.1,
                            "dynamics_error": 1.3, "unstable_fraction": 0.0,
                            "lag1_autocorrelation": 0.96, "sin4y_amplitude": 0.7}
    assert muon.floor == FLOOR and muon.sampler == SAMPLER
    assert rows["adamw", "linear"].quality == {}


def test_scores_from_before_the_sampler_settings_count_only_where_defined_alike():
    """Old scores stay readable; only W1 and the divergence ratio kept their definition, and
    a seed scored today outweighs them."""
    old, new = SimpleNamespace(quality=LEGACY_QUALITY), SimpleNamespace(quality=QUALITY)
    summary = sample_quality.quality_summary([old])
    assert summary.means == {"vorticity_w1": 40.0, "divergence_ratio": 8.0}
    assert (summary.seeds, summary.floor, summary.sampler) == (1, {}, None)
    mixed = sample_quality.quality_summary([old, new, SimpleNamespace(quality=None)])
    assert mixed.seeds == 1 and mixed.means["vorticity_w1"] == 0.05
    assert mixed.floor == FLOOR and mixed.sampler == SAMPLER


def test_like_data_against_the_floor_by_hand():
    floor = {"spectrum_error": 0.1, "vorticity_w1": 0.04}
    like = {"std_ratio": 1.4, "spectrum_error": 0.29, "vorticity_w1": 0.1,
            "dynamics_error": 4.0}
    assert sample_quality.unlike_data(like, floor) == []
    assert sample_quality.unlike_data(like, {}) == []  # nothing to judge against
    unlike = {"std_ratio": 0.6, "spectrum_error": 0.35, "vorticity_w1": 0.2}
    assert sample_quality.unlike_data(unlike, floor) == [
        "velocity std 0.60× the data's", "spectrum error 3.5× the data-vs-data floor",
        "vorticity W1 5.0× the data-vs-data floor",
        "dynamics not measurable (no pair the solver can advance)"]


def test_final_loss_by_noise_level_over_seeds(study):
    """The last epoch's per-bin losses (not an earlier epoch's), with the edges the runs
    recorded; seed mean and sample std per bin; None for rows from before the bins."""
    db, ids = study
    runs = {r.id: r for r in results.load_runs(db)}
    assert runs[ids["adamw_0"]].bins == pytest.approx(ADAMW_BINS)
    assert runs[ids["adamw_0"]].loss_bins == tuple(EDGES)
    assert runs[ids["sgd_0"]].bins is None and runs[ids["sgd_0"]].loss_bins is None
    rows = by_optimizer(results.summarize(runs.values()))
    adamw, muon = rows["adamw", "linear"].binned, rows["muon", "linear"].binned
    assert adamw.edges == tuple(EDGES) and adamw.seeds == 2
    assert adamw.mean == pytest.approx([1.5 * b for b in ADAMW_BINS])
    assert adamw.std == pytest.approx([math.sqrt(0.5) * b for b in ADAMW_BINS])
    assert muon.mean == pytest.approx(MUON_BINS) and muon.std == pytest.approx([0.0] * 8)
    assert rows["sgd", "linear"].binned is None


def test_binned_loss_keeps_one_set_of_edges():
    """Seeds measured on other edges than the first (or with no edges) are left out."""
    def run(seed, bins, edges):
        return RunResult(seed, "done", "tiny", "adamw", "linear", 1e-3, 0.0, seed, 3, "",
                         (), None, None, None, None, bins=bins, loss_bins=edges)

    binned = results.binned_loss([run(0, None, None), run(1, (1.0, 2.0), (0.0, 0.5, 1.0)),
                                  run(2, (3.0,), (0.0, 1.0)), run(3, (3.0, 4.0), None),
                                  run(4, (3.0, 6.0), (0.0, 0.5, 1.0))])
    assert binned.edges == (0.0, 0.5, 1.0) and binned.seeds == 2
    assert binned.mean == (2.0, 4.0)
    assert binned.std == pytest.approx((math.sqrt(2), 2 * math.sqrt(2)))
    single = results.binned_loss([run(1, (1.0, 2.0), (0.0, 0.5, 1.0))])
    assert single.std is None and results.binned_loss([run(0, None, None)]) is None


def test_caveats_count_runs_and_see_mixed_devices(study):
    db, ids = study
    runs = results.load_runs(db)
    rows = results.summarize(runs)
    caveats = results.caveats(runs, rows)
    assert caveats.statuses == {"done": 7, "diverged": 1, "failed": 1, "queued": 1}
    assert len(caveats.devices) > 1
    assert caveats.devices == ("cpu · x86_64", "cuda · NVIDIA H100")
    assert caveats.seeds == (1, 2)
    assert {r.id for r in caveats.not_done} == {ids["muon_diverged"], ids["sgd_failed"],
                                                ids["adamw_queued"]}
    # the diverged run's NaN survives the database and keeps it out of the table
    diverged = next(r for r in runs if r.id == ids["muon_diverged"])
    assert diverged.curve == ()  # curves are read for done runs only
    assert all(s.first.lr != 2e-3 for s in settings(runs))


def test_one_device_is_not_mixed(study):
    db, _ = study
    runs = results.load_runs(db, RunFilter.parse(["opt:adamw,muon"]))
    assert len(results.caveats(runs, results.summarize(runs)).devices) == 1


def test_filters_combine(study):
    db, ids = study
    assert {r.id for r in results.load_runs(db, RunFilter.parse(["opt:sgd"]))} == {
        ids["sgd_0"], ids["sgd_failed"]}
    chosen = results.load_runs(db, RunFilter.parse(["opt:adamw", "opt:sgd", "status:done"]))
    assert {r.optimizer for r in chosen} == {"adamw", "sgd"}
    assert {r.status for r in chosen} == {"done"}
    assert results.load_runs(db, RunFilter.parse(["preset:paper"])) == []
    assert len(results.load_runs(db, RunFilter.parse(["schedule:cosine"]))) == 1


def test_last_sample_ids(study):
    db, ids = study
    found = results.last_sample_ids(db, [ids["adamw_0"], ids["muon_0"], ids["sgd_0"]])
    assert set(found) == {ids["adamw_0"], ids["muon_0"]}


# ----------------------------------------------------------------------------- pure parts


def test_mean_std_uses_the_sample_std():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert mean_std([4.0]) == (4.0, None)
    with pytest.raises(ValueError):
        mean_std([])


def test_time_to_target_and_mean_curve():
    curve = [CurvePoint(0, 1.0, 0.5), CurvePoint(1, 2.0, 0.3), CurvePoint(2, 3.0, 0.2)]
    assert time_to_target(curve, 0.3) == 2.0
    assert time_to_target(curve, 0.1) == math.inf
    a = run(1, curve=curve)
    b = run(2, curve=[CurvePoint(0, 3.0, 0.7), CurvePoint(2, 5.0, 0.4)])  # epoch 1 missing
    assert mean_curve([a, b]) == (CurvePoint(0, 2.0, 0.6), CurvePoint(2, 4.0, pytest.approx(0.3)))


def run(run_id: int, *, optimizer: str = "adamw", lr: float = 1e-3, wd: float = 0.01,
        seed: int = 0, preset: str = "paper", epochs: int = 1024, schedule: str = "linear",
        final: float = 0.01, curve=None, train_s: float = 600.0) -> RunResult:
    curve = curve or [CurvePoint(0, train_s / 2, final * 2), CurvePoint(1, train_s, final)]
    return RunResult(id=run_id, status="done", preset=preset, optimizer=optimizer,
                     schedule=schedule, lr=lr, weight_decay=wd, seed=seed, epochs=epochs,
                     overrides="", tags=(), device="cpu", ms_per_step=1.0, train_s=train_s,
                     quality=None, curve=tuple(curve))


def test_paper_comparison_matches_lr_epochs_and_rank():
    stats = settings([
        run(1, lr=4.5e-4, final=0.0090), run(2, lr=4.5e-4, seed=1, final=0.0092),
        run(3, lr=2e-4, final=0.0095), run(4, lr=1e-3, final=0.0120),
        run(5, lr=2e-4, epochs=2048, final=0.0086),
        run(6, optimizer="schedulefree", schedule="constant", lr=4.5e-4, final=0.0097),
        run(7, optimizer="muon", preset="tiny", final=0.5),  # not the paper preset
    ])
    published = [Published("fig2L", "AdamW", "4.5e-4", 0.00907),
                 Published("fig2L", "Muon", "1e-3", 0.00744),
                 Published("fig2L", "ScheduleFree", "4.5e-4", 0.00969),
                 Published("fig2R", "AdamW(lr4.5e-4,wd1e-2)", "end_time_min", 46.7),
                 Published("fig3L", "AdamW(lr2e-4,wd1e-2,2048ep)", "last_val", 0.00863),
                 Published("fig3R", "AdamW top2 LR", "final", 0.00954)]
    got = compare_published(stats, published)
    assert got[0].ours == pytest.approx(0.0091) and got[0].seeds == 2
    assert got[1].ours is None and got[1].setting == ""  # Muon ran on tiny only
    assert got[2].ours == pytest.approx(0.0097)
    assert got[3].ours == pytest.approx(10.0)  # 600 s of training
    assert got[4].ours == pytest.approx(0.0086)
    assert got[5].ours == pytest.approx(0.0095) and "lr 2e-4" in got[5].setting


def test_the_shipped_published_figures_load():
    values, source = published.load_published()
    assert source.startswith("Source: arXiv 2510.19376")
    assert len(values) == 39
    assert {v.figure for v in values} == {"fig2L", "fig2R", "fig3L", "fig3R"}
    assert Published("fig2L", "SOAP", "2e-3", 0.00728) in values
    assert Published("fig2R", "Muon(lr1e-3,wd3.2e-2)", "end_time_min", 68.0) in values


def test_hyperparameters_print_as_people_write_them():
    assert [results.short(x) for x in (4.5e-4, 1e-3, 0.032, 0.01, 1.0, 1e6, 0.0)] == [
        "4.5e-4", "1e-3", "0.032", "0.01", "1", "1e6", "0"]


def test_bookkeeping_overrides_neither_split_settings_nor_show(tmp_path):
    """Runs that differ only in what they record (preview cadence, quality settings) are seeds
    of one setting and their label shows no overrides; a training override does both."""
    from diffbench.storage import queue, records, workers
    from diffbench.storage.runs import RunSpec

    db = open_database(f"sqlite:///{tmp_path / 'jobs.db'}")
    worker = workers.register_worker(db, host="h", pid=1, device="cpu").id
    bookkeeping = [{"train.samples_every": 20}, {"quality.enabled": False}]
    training = {"train.grad_clip": 0.5}
    for seed, overrides in enumerate([*bookkeeping, training]):
        (run_id,) = queue.enqueue(db, [RunSpec("tiny", "adamw", "linear", 1e-3, 0.01, seed,
                                               epochs=1, overrides=overrides)]).ids
        queue.claim_next(db, worker)
        records.add_epoch_metrics(db, run_id, [{
            "epoch": 0, "step": 1, "train_loss": 0.6, "valid_loss": 0.5, "fixed_valid_loss": 0.5,
            "epoch_s": 1.0, "valid_s": 0.1, "sample_s": 0.0, "train_s": 1.0}])
        queue.finish(db, run_id, worker, "done", summary={"ms_per_step": 1.0})
    stats = results.settings(results.load_runs(db))
    db.dispose()
    assert [s.seeds for s in stats] == [2, 1]
    assert stats[0].label() == "lr 1e-3, wd 0.01"
    assert stats[1].label() == 'lr 1e-3, wd 0.01, {"train.grad_clip": 0.5}'
