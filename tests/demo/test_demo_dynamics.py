"""The demo prints the recipe's claim on its own study: early gradient norm and loss against the
score, over the trials run to the end and over every trial's last evaluated score."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))

from report_stores import make_store  # noqa: E402

from tunescout.analysis import dynamics_correlations  # noqa: E402
from tunescout.workflows.analyze import read_study_tables  # noqa: E402
from tunescout.workflows.demo import _say_dynamics  # noqa: E402


def _said(store: Path, name: str) -> list[str]:
    tables, spec = read_study_tables(store, name)
    said: list[str] = []
    _say_dynamics(dynamics_correlations, (tables["telemetry"], tables["trials"], tables["results"], spec),
                  said.append)
    return said


def test_the_demo_says_whether_early_dynamics_predicted_the_scores(tmp_path: Path) -> None:
    """In the synthetic study a better score goes with a lower early gradient norm: both lines
    say so with a positive rho, an interval and the trials counted."""
    said = _said(make_store(tmp_path / "s.db", name="dyn"), "dyn")
    assert len(said) == 2
    final, last = said
    assert final.startswith("    early dynamics vs final score (trials run to the end): grad norm rho +")
    assert last.startswith("    early dynamics vs last evaluated score (the rung's for stopped trials): "
                           "grad norm rho +")
    for line in said:
        assert "loss rho" in line and "(n=" in line and "positive = the recipe's claim held" in line
    assert int(last.split("(n=")[1].split(";")[0]) > int(final.split("(n=")[1].split(";")[0])  # stopped ones too


def test_too_few_trials_to_correlate_is_said_not_raised(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s.db", name="tiny", lrs=(1e-3,), batches=(8,), stop_worst=0)
    said = _said(store, "tiny")
    assert said and all("too few trials per cohort to correlate" in line for line in said)
