"""The results-table contract: loading files with clear errors, and building it from a study store."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from tunescout.analysis.cbs import rank_results
from tunescout.analysis.table import config_id_of, load_results, results_from_store, validate_results
from tunescout.study.store import StoreError, open_store


def test_load_results_csv_and_parquet(tmp_path: Path) -> None:
    df = pd.DataFrame({"config_id": ["a", "b"], "dataset": ["x", "x"], "score": [0.5, 0.7],
                       "higher_is_better": ["false", "False"], "hp.learning_rate": [1e-4, 1e-3]})
    df.to_csv(tmp_path / "r.csv", index=False)
    df.to_parquet(tmp_path / "r.parquet", index=False)
    for name in ("r.csv", "r.parquet"):
        out = load_results(tmp_path / name)
        assert out["higher_is_better"].tolist() == [False, False]
        assert out["score"].tolist() == [0.5, 0.7] and "hp.learning_rate" in out.columns


def test_load_results_names_missing_columns_and_closest(tmp_path: Path) -> None:
    pd.DataFrame({"config": ["a"], "dataset": ["x"], "scores": [1.0]}).to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(ValueError, match=r"missing column\(s\) `config_id` \(closest: `config`\), "
                                         r"`score` \(closest: `scores`\); found: config, dataset, scores"):
        load_results(tmp_path / "r.csv")
    with pytest.raises(FileNotFoundError, match="results file not found"):
        load_results(tmp_path / "nope.csv")
    (tmp_path / "r.xlsx").write_text("x")
    with pytest.raises(ValueError, match="unknown results format '.xlsx'"):
        load_results(tmp_path / "r.xlsx")


def test_validate_results_rejects_bad_values() -> None:
    base = {"config_id": ["a", "b"], "dataset": ["x", "x"]}
    with pytest.raises(ValueError, match=r"row 1: score 'high' is not a number"):
        validate_results(pd.DataFrame({**base, "score": ["0.5", "high"]}))
    with pytest.raises(ValueError, match="mix higher- and lower-is-better"):
        validate_results(pd.DataFrame({**base, "score": [1, 2], "metric": ["accuracy", "val_loss"]}))
    with pytest.raises(ValueError, match="higher_is_better must be true/false"):
        validate_results(pd.DataFrame({**base, "score": [1, 2], "higher_is_better": ["yes", "maybe"]}))
    with pytest.raises(ValueError, match="no rows"):
        validate_results(pd.DataFrame({"config_id": [], "dataset": [], "score": []}))
    ok = validate_results(pd.DataFrame({**base, "score": ["0.5", ""], "metric": "val_loss"}))
    assert ok["higher_is_better"].tolist() == [False, False] and math.isnan(ok["score"].iloc[1])


def test_config_id_is_sorted_readable_and_exact() -> None:
    assert config_id_of({"learning_rate": 1e-4, "batch_size": 8}) == "batch_size=8,learning_rate=0.0001"
    assert config_id_of({"batch_size": 8.0, "lora.r": 16, "lr": 2e-5}) == "batch_size=8,lora.r=16,lr=2e-05"
    assert config_id_of({"lr": 1.23456789e-4}) != config_id_of({"lr": 1.23456788e-4})
    assert config_id_of({}) == "default"


SPEC = {"name": "demo", "datasets": [{"name": "a", "metric": "accuracy", "task_type": "cls"},
                                     {"name": "b", "metric": "val_loss", "task_type": None}]}
LOW, HIGH = {"batch_size": 8, "learning_rate": 1e-4}, {"batch_size": 8, "learning_rate": 1e-3}


def _trial(tid: str, dataset: str, hparams: dict, seed: int = 0) -> dict:
    return {"trial_id": tid, "model": "m", "method": "lora", "dataset": dataset, "hparams": hparams,
            "seed": seed, "config": {}, "planned_samples": 32, "planned_tokens": 320}


@pytest.fixture()
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "study.db"
    store = open_store(path)
    store.sync_trials("demo", SPEC, [
        _trial("t1", "a", LOW, 0), _trial("t2", "a", LOW, 1), _trial("t3", "b", LOW),
        _trial("t4", "a", HIGH), _trial("t5", "b", HIGH), _trial("t6", "a", {"batch_size": 32}),
        _trial("t7", "b", {"batch_size": 32}),
    ])
    for tid in ("t1", "t2", "t3", "t4", "t5", "t6"):
        store.mark_running(tid)
    store.finish("t1", "completed", metrics={"accuracy": 0.8, "val_loss": 1.0}, totals={"samples": 32, "tokens": 300})
    store.finish("t2", "completed", metrics={"accuracy": 0.6}, totals={"samples": 32, "tokens": 340})
    store.add_telemetry("t3", {"step": 1, "samples": 8, "tokens": 80, "val_loss": 2.0})
    store.finish("t3", "completed", metrics={"val_loss": 1.5}, totals={"samples": 32, "tokens": 320})
    store.add_telemetry("t4", {"step": 1, "samples": 8, "tokens": 80, "metrics": {"accuracy": 0.2}})
    store.finish("t4", "stopped", "rung 0.25", metrics={"accuracy": 0.5}, totals={"samples": 16, "tokens": 160})
    store.add_telemetry("t5", {"step": 1, "samples": 8, "tokens": 80, "val_loss": 3.0})
    store.finish("t5", "diverged", "nan loss", totals={"samples": 12, "tokens": 120})
    store.finish("t6", "failed", "oom")  # no score at all; t7 stays pending
    store.close()
    return path


def test_results_from_store_last(store_path: Path) -> None:
    df = results_from_store(store_path).set_index(["config_id", "dataset"])
    low, high = "batch_size=8,learning_rate=0.0001", "batch_size=8,learning_rate=0.001"
    assert len(df) == 5 and ("batch_size=32", "b") not in df.index  # the pending trial is left out
    row = df.loc[(low, "a")]
    assert row["score"] == pytest.approx(0.7) and row["n_seeds"] == 2 and row["tokens"] == 320
    assert row["trial_ids"] == "t1,t2" and row["higher_is_better"] and row["task_type"] == "cls"
    assert row["hp.learning_rate"] == 1e-4 and row["model"] == "m" and row["method"] == "lora"
    assert df.loc[(low, "b"), "score"] == 1.5 and not df.loc[(low, "b"), "higher_is_better"]  # final, not 2.0
    assert df.loc[(high, "a"), "score"] == 0.5 and df.loc[(high, "a"), "status"] == "stopped"
    assert df.loc[(high, "b"), "score"] == 3.0  # diverged: its last evaluated score
    assert math.isnan(df.loc[("batch_size=32", "a"), "score"]) and df.loc[("batch_size=32", "a"), "n_seeds"] == 0
    ranking = rank_results(results_from_store(store_path))[("m", "lora")]
    assert ranking["config_id"].tolist() == [low, high, "batch_size=32"]


def test_results_from_store_completed_and_per_trial(store_path: Path) -> None:
    df = results_from_store(store_path, include="completed").set_index(["config_id", "dataset"])
    assert math.isnan(df.loc[("batch_size=8,learning_rate=0.001", "a"), "score"])
    assert math.isnan(df.loc[("batch_size=8,learning_rate=0.001", "b"), "score"])
    assert df.loc[("batch_size=8,learning_rate=0.0001", "a"), "score"] == pytest.approx(0.7)
    trials = results_from_store(store_path, average_seeds=False)
    assert sorted(trials["trial_id"]) == ["t1", "t2", "t3", "t4", "t5", "t6"]
    assert trials.set_index("trial_id").loc["t2", "score"] == 0.6
    with pytest.raises(ValueError, match="include must be"):
        results_from_store(store_path, include="all")


def test_results_from_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no study store at"):
        results_from_store(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()  # asking must not create an empty store
    open_store(tmp_path / "empty.db").close()
    with pytest.raises(ValueError, match="holds no study"):
        results_from_store(tmp_path / "empty.db")
