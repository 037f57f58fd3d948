"""The HTML report on synthetic stores: self-contained, every section present, the charts and
tables we expect, numbers that are the analysis functions', and degenerate studies that render."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
import yaml
from plotly.offline import get_plotlyjs

from report_stores import make_store
from tunescout.analysis import dynamics_correlations, rank_results, results_from_store
from tunescout.report import build_report
from tunescout.report.blocks import fmt_rho
from tunescout.study.export import store_tables
from tunescout.study.store import StoreError, open_store

SECTIONS = ["summary", "curves", "heatmap", "cbs", "dynamics", "phases", "recommend"]
FIGURE_DIV = 'class="plotly-graph-div"'


def sections_of(page: str) -> dict[str, str]:
    """Section id → its HTML, in page order."""
    parts = re.split(r'(?=<section id=")', page)
    return {re.match(r'<section id="([^"]+)"', p).group(1): p for p in parts[1:]}


def without_plotly_js(page: str) -> str:
    js = get_plotlyjs()
    assert page.count(js) == 1, "plotly.js must be inlined exactly once"
    return page.replace(js, "")


def test_report_is_self_contained(main_report: Path) -> None:
    page = main_report.read_text(encoding="utf-8")
    assert page.count("* plotly.js v") == 1
    rest = without_plotly_js(page)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", rest, re.I), "no remote src/href"
    assert not re.search(r"<link\b|@import|url\(\s*['\"]?(?:https?:)?//", rest, re.I), "no external CSS or fonts"
    assert "<script src" not in rest
    assert "Plotly.newPlot" in rest


def test_every_section_and_the_expected_figures(main_report: Path) -> None:
    sections = sections_of(main_report.read_text(encoding="utf-8"))
    assert list(sections) == SECTIONS
    for sid, body in sections.items():
        assert re.search(r"<h2>[^<]+</h2>", body), f"{sid} has no heading"
    # 4 cohorts (2 datasets × 2 methods), 2 model × method groups
    expected = {"summary": 1, "curves": 4, "heatmap": 2, "cbs": 4, "dynamics": 5, "phases": 0, "recommend": 0}
    assert {sid: body.count(FIGURE_DIV) for sid, body in sections.items()} == expected
    assert "no strategy axis" in sections["phases"]
    assert "miniature of a real study" in sections["summary"]  # a demo-* study says it is a miniature


def test_hover_shows_the_trial_and_stopped_trials_are_marked(main_store: Path, main_report: Path) -> None:
    curves = sections_of(main_report.read_text(encoding="utf-8"))["curves"]
    store = open_store(main_store, readonly=True)
    trials, stopped = store.trials(), [t["trial_id"] for t in store.trials(status="stopped")]
    store.close()
    assert len(stopped) == 4
    for t in trials:
        assert f"trial {t['trial_id']}" in curves  # hover text of its line
    assert "learning_rate=0.001" in curves and "batch_size=16" in curves
    assert curves.count('"symbol":"x"') == 2 * len(stopped)  # loss and grad-norm panels


def test_numbers_are_those_of_the_analysis(main_store: Path, main_report: Path) -> None:
    sections = sections_of(main_report.read_text(encoding="utf-8"))
    rankings = rank_results(results_from_store(main_store), tau=0.95)
    for ranking in rankings.values():
        assert f"<td>{ranking['config_id'].iloc[0]}</td>" in sections["cbs"]
    store = open_store(main_store, readonly=True)
    tables, spec = store_tables(store), json.loads(store.study()["spec"])
    store.close()
    corr = dynamics_correlations(tables["telemetry"], tables["trials"], tables["results"], spec, window=0.1)
    pooled = corr[corr["level"] == "pooled"].iloc[0]
    text = fmt_rho(pooled["rho_lowgrad_better"], pooled["lowgrad_ci_lo"], pooled["lowgrad_ci_hi"], pooled["n"])
    assert text in sections["dynamics"]
    summary = sections["summary"]
    assert "268,800" in summary and "307,200" in summary and "87.5% of the full grid" in summary


def test_recommendations_are_valid_yaml(main_report: Path) -> None:
    recommend = sections_of(main_report.read_text(encoding="utf-8"))["recommend"]
    snippets = [(html.unescape(title), yaml.safe_load(html.unescape(text))) for title, text in re.findall(
        r"<figcaption><span>(.*?)</span>.*?<pre><code>(.*?)</code></pre>", recommend, re.S)]
    ranked = [s for title, s in snippets if title.startswith("rank ")]
    assert len(ranked) == 2 * 5  # top 5 per model × method
    assert any(title.startswith("the study's fixed settings") for title, _ in snippets)
    assert all(isinstance(s["batch_size"], int) and s["method"] in ("full", "lora") for s in ranked)
    # a LoRA-only grid key comes back nested, and an int (a table column would have made it 8.0)
    assert all(s["lora"] == {"r": 8} for s in ranked if s["method"] == "lora")
    assert all("lora" not in s for s in ranked if s["method"] == "full")
    assert "cbs-llama3-8b-lora" in recommend  # the tiny Llama's family matches the Llama presets


def test_strategy_study_compares_stacked_and_phased(strategy_store: Path, tmp_path: Path) -> None:
    page = build_report(strategy_store, tmp_path / "r.html", top=2).read_text(encoding="utf-8")
    sections = sections_of(page)
    assert sections["phases"].count(FIGURE_DIV) == 1 and "score stacked" in sections["phases"]
    assert "miniature" not in sections["summary"]
    assert "could not be replayed" not in sections["dynamics"]  # val_loss at every step: ASHA replays too
    assert "asha eta=2" in sections["dynamics"]


def test_two_trial_cohorts_show_na_correlations(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.db", name="pairs", lrs=(1e-4, 1e-3), batches=(8,), stop_worst=0)
    page = build_report(store, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "n/a (n=2)" in sections_of(page)["dynamics"]


def test_a_one_dataset_study_says_why_nothing_is_held_out_without_a_warning(tmp_path: Path, caplog) -> None:
    """Every `tune` store has one dataset: its report explains the empty held-out table in the page,
    and the command's console stays free of a warning about it."""
    store = make_store(tmp_path / "s.db", name="one-dataset", datasets=(("sentiment", "accuracy"),), methods=("lora",))
    with caplog.at_level("WARNING"):
        page = build_report(store, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "needs at least two scored datasets" in sections_of(page)["cbs"]
    assert not [r for r in caplog.records if r.levelname == "WARNING"], [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("case", ["zeros", "one_trial_cohorts", "no_completed", "only_pending"])
def test_degenerate_studies_render(case: str, tmp_path: Path) -> None:
    kwargs = {
        "zeros": {"score": lambda *_: 0.0},
        "one_trial_cohorts": {"lrs": (1e-3,), "batches": (8,)},
        "no_completed": {"status": lambda i: ("stopped", "running", "failed", "pending")[i % 4]},
        "only_pending": {"status": lambda i: "pending"},
    }[case]
    store = make_store(tmp_path / "s.db", name=f"degenerate-{case}", **kwargs)
    page = build_report(store, tmp_path / "r.html").read_text(encoding="utf-8")
    sections = sections_of(page)
    assert list(sections) == SECTIONS
    assert "could not be built" not in page
    if case in ("no_completed", "only_pending"):
        assert "No completed trial has a final score yet" in sections["heatmap"]
    if case == "only_pending":
        assert "No telemetry yet" in sections["curves"] and "nothing to rank" in sections["cbs"]
        assert "No ranking to recommend from" in sections["recommend"]
    if case == "one_trial_cohorts":
        assert "n/a (n=1)" in sections["dynamics"]
    if case == "zeros":
        assert sections["heatmap"].count(FIGURE_DIV) == 2


def test_empty_or_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    with pytest.raises(StoreError, match="no study store"):
        build_report(missing, tmp_path / "r.html")
    assert not missing.exists()  # the report never creates a store
    open_store(tmp_path / "empty.db").close()
    with pytest.raises(ValueError, match="holds no study"):
        build_report(tmp_path / "empty.db", tmp_path / "r.html")
    store = open_store(tmp_path / "no-trials.db")
    store.sync_trials("s", {"name": "s", "datasets": []}, [])
    store.close()
    with pytest.raises(ValueError, match="has no trials"):
        build_report(tmp_path / "no-trials.db", tmp_path / "r.html")
    (tmp_path / "junk.db").write_text("not sqlite at all, just some text " * 100)
    with pytest.raises(ValueError, match="not a tunescout study store"):
        build_report(tmp_path / "junk.db", tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_bad_parameters(main_store: Path, tmp_path: Path) -> None:
    for kwargs in ({"tau": 1.5}, {"window": 0.0}, {"top": 0}):
        with pytest.raises(ValueError):
            build_report(main_store, tmp_path / "r.html", **kwargs)
