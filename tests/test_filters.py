"""storage/filters.py: the one filter grammar, read the same by the report, `runs`/`queue ls`
and the dashboard's `/` filter (on the hand-built study of tests/results_db.py)."""

from __future__ import annotations

import re

import pytest

from diffbench.storage import queue, results
from diffbench.storage.db import open_database
from diffbench.storage.filters import FilterError, RunFilter, filtered_runs
from diffbench.storage.runs import RunSpec
from diffbench.tui.dashboard.state import DashboardReader
from tests.results_db import build_study


@pytest.fixture
def study(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'jobs.db'}")
    ids = build_study(db)
    queue.enqueue(db, [RunSpec("paper-bf16", "soap", "wsd", 1e-3, 0.0, 7,
                                     tags=("sweep1",))])
    yield db, ids
    db.dispose()


def chosen(db, text: str) -> set[int]:
    return {r.id for r in filtered_runs(db, RunFilter.parse(text))}


def test_keys_values_wildcards_and_words(study):
    db, ids = study
    assert chosen(db, "opt:sgd") == {ids["sgd_0"], ids["sgd_failed"]}
    assert chosen(db, "opt:adamw,sgd status:done") == {
        ids["adamw_hi_0"], ids["adamw_hi_1"], ids["adamw_0"], ids["adamw_1"], ids["sgd_0"]}
    assert chosen(db, "opt:adamw opt:sgd status:done") == chosen(db, "o:adamw,sgd s:done")
    assert chosen(db, "OPT:SOAP") == chosen(db, "preset:paper*") == chosen(db, "tag:sweep1")
    assert len(chosen(db, "preset:paper*")) == 1 and chosen(db, "preset:paper") == set()
    assert chosen(db, "device:*h100") == {ids["sgd_0"]}  # the GPU's name, from provenance
    assert chosen(db, "device:x86_64 seed:1") == {ids["adamw_hi_1"], ids["adamw_1"],
                                                  ids["muon_1"]}
    assert chosen(db, f"id:{ids['muon_0']},{ids['sgd_0']}") == {ids["muon_0"], ids["sgd_0"]}
    assert chosen(db, "diverged") == {ids["muon_diverged"]}  # a word: any text column
    assert chosen(db, "sched:cosine adamw") == {ids["adamw_queued"]}
    assert len(chosen(db, "")) == len(ids) + 1 and not RunFilter.parse("")


def test_text_and_repeated_options_parse_alike():
    one = RunFilter.parse("opt:adamw,muon status:done adam")
    assert one == RunFilter.parse(["opt:adamw", "opt:muon status:done", "adam"])
    assert str(one) == "optimizer:adamw,muon status:done adam"
    assert RunFilter.parse(str(one)) == one


@pytest.mark.parametrize("term,message", [
    ("color:red", "filter 'color:red': unknown key 'color'; known: device, id, o, opt"),
    ("opt:", "filter 'opt:': needs a value, e.g. opt:muon"),
    ("status:finished", "unknown status 'finished'; known: queued, running"),
    ("opt:lion", "unknown optimizer 'lion'; known: adamw, sgd"),
    ("sched:step", "unknown schedule 'step'"),
    ("seed:x", "filter 'seed:x': seed takes whole numbers"),
    ("id:1,two", "id takes whole numbers"),
])
def test_bad_terms_name_themselves(term, message):
    with pytest.raises(FilterError, match=re.escape(message)):
        RunFilter.parse(f"opt:adamw {term}")


def test_a_wildcard_is_not_checked_against_the_names():
    assert RunFilter.parse("opt:mu* sched:sqrt*").terms == {
        "optimizer": frozenset({"mu*"}), "schedule": frozenset({"sqrt*"})}


@pytest.mark.parametrize("text", [
    "opt:adamw,muon", "status:done,diverged", "sched:linear seed:0", "device:*h100*",
    "preset:tiny muon", "adamw status:queued", "id:1,2,3,9", "s:failed,done o:sgd"])
def test_report_and_dashboard_select_the_same_runs(study, text):
    db, _ = study
    run_filter = RunFilter.parse(text)
    views = DashboardReader(db).refresh().runs
    assert ({r.id for r in results.load_runs(db, run_filter)}
            == {v.id for v in views if run_filter.matches(v)})
