"""Fixtures of the report tests: synthetic stores (see ``report_stores``) and the main report."""

from __future__ import annotations

from pathlib import Path

import pytest

from report_stores import make_store


@pytest.fixture(scope="session")
def main_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 datasets (accuracy, val_loss) × 2 methods × 3 LRs × 2 batch sizes; the worst trial of
    each cohort stopped at 25%."""
    return make_store(tmp_path_factory.mktemp("stores") / "main.db")


@pytest.fixture(scope="session")
def strategy_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A grid with `strategy: [stacked, phased]`, val_loss every step (so ASHA replays too)."""
    return make_store(tmp_path_factory.mktemp("stores") / "strategy.db", name="recipe-check",
                      datasets=(("sentiment", "accuracy"),), methods=("full",), lrs=(1e-4, 1e-3),
                      batches=(8, 16), strategies=("stacked", "phased"), val_loss_every_step=True)


@pytest.fixture(scope="session")
def main_report(main_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tunescout.report import build_report

    return build_report(main_store, tmp_path_factory.mktemp("report") / "report.html")
