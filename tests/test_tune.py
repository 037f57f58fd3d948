"""`tunescout tune` end to end on the tiny model: candidates from a results table and from a preset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from tunescout.analysis import rank_results
from tunescout.cli import main
from tunescout.config import ConfigError
from tunescout.demo.tasks import make_rows, write_jsonl
from tunescout.study.store import open_store
from tunescout.workflows.tune import candidate_configs

SMALL = ["max_length=64", "max_tokens_per_micro_batch=256", "epochs=2"]


@pytest.fixture()
def task(tmp_path: Path) -> tuple[Path, Path]:
    return (write_jsonl(make_rows("sentiment", 32, seed=0), tmp_path / "sentiment_train.jsonl"),
            write_jsonl(make_rows("sentiment", 8, seed=1), tmp_path / "sentiment_eval.jsonl"))


def _table(path: Path) -> Path:
    """A ranked grid from elsewhere: three configs on two datasets; the first two cover both."""
    rows = []
    for cid, lr, bs, scores in (("a", 1e-3, 8, (0.9, 0.5)), ("b", 3e-3, 4, (0.6, 0.8)), ("c", 1e-4, 8, (0.5, 0.4))):
        for dataset, score in zip(("x", "y"), scores):
            rows.append({"config_id": cid, "dataset": dataset, "score": score, "method": "lora",
                         "hp.learning_rate": lr, "hp.batch_size": bs})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_tune_from_a_results_table(tiny_model_dir: Path, task, tmp_path: Path, capsys) -> None:
    table = _table(tmp_path / "grid.csv")
    out = tmp_path / "tune"
    args = ["tune", "--model", str(tiny_model_dir), "--method", "lora", "--train", str(task[0]),
            "--eval", str(task[1]), "--metric", "accuracy", "--from", str(table), "--k", "2", "--out", str(out),
            *SMALL]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "<- best" in printed and "best model:" in printed
    top2 = rank_results(pd.read_csv(table), group_by=None)[()]["config_id"].head(2).tolist()
    assert set(top2) == {"a", "b"}  # each covers one dataset; c none
    with open_store(out / "tune.db", readonly=True) as store:
        trials = store.trials()
        decisions = store.decisions()
    got = sorted((t["hparams"]["learning_rate"], t["hparams"]["batch_size"]) for t in trials)
    assert got == [(1e-3, 8), (3e-3, 4)] and all(t["config"]["epochs"] == 2 for t in trials)
    assert len(decisions) == 2 and sum(d["kept"] for d in decisions) == 1  # promote: ceil(2/3) continues
    assert (out / "best" / "adapter_config.json").exists() and (out / "best" / "train_config.yaml").exists()
    fates = list(csv.DictReader((out / "fates.csv").open()))
    assert len(fates) == 2 and sum(f["winner"] == "True" for f in fates) == 1
    assert all(f["source"].startswith("rank ") for f in fates)
    assert (out / "report.html").exists()

    before = {t["trial_id"]: t["attempts"] for t in trials}
    assert main(args) == 0  # the same command again: resumed, nothing retrained
    with open_store(out / "tune.db", readonly=True) as store:
        assert {t["trial_id"]: t["attempts"] for t in store.trials()} == before


def test_tune_from_a_preset(tiny_model_dir: Path, task, tmp_path: Path) -> None:
    out = tmp_path / "tune"
    assert main(["tune", "--model", str(tiny_model_dir), "--method", "lora", "--train", str(task[0]), "--eval",
                 str(task[1]), "--metric", "accuracy", "--preset", "cbs-llama3-8b-lora", "--out", str(out),
                 "--max-new-tokens", "3", "--eval-limit", "5", *SMALL, "lora.r=8"]) == 0
    with open_store(out / "tune.db", readonly=True) as store:
        (trial,) = store.trials()
        (dataset,) = store.study_spec()["datasets"]
    assert dataset["max_new_tokens"] == 3 and dataset["eval_limit"] == 5  # a short answer, a few rows scored
    assert trial["status"] == "completed"
    config = trial["config"]
    assert config["learning_rate"] == 5e-5 and config["batch_size"] == 8  # the preset's
    assert config["lora"]["r"] == 8 and config["lora"]["alpha"] == 32 and config["epochs"] == 2  # overrides win
    assert json.loads((out / "best" / "adapter_config.json").read_text())["r"] == 8


def test_candidates_from_the_family_presets_and_errors() -> None:
    found, fixed = candidate_configs("org/Llama-3-8B", "lora", k=5)
    assert [label for label, _ in found] == ["preset cbs-llama3-8b-lora"] and fixed == {}
    with pytest.raises(ConfigError, match="not both"):
        candidate_configs("m", "lora", source="t.csv", preset="x")
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        candidate_configs("m", "lora", preset="nope")


def test_candidates_from_a_study_store_use_completed_scores_and_its_training_settings(tmp_path: Path) -> None:
    spec = {"name": "old", "datasets": [{"name": "x", "metric": "accuracy"}, {"name": "y", "metric": "accuracy"}],
            "fixed": {"epochs": 3, "max_length": 256, "eval_at_samples": [77], "save_model": False}}
    rows, outcomes = [], []
    for i, (lr, scores, status) in enumerate(((1e-3, (0.9, 0.2), "completed"), (3e-3, (0.3, 0.8), "completed"),
                                              (1e-2, (0.99, 0.99), "stopped"))):
        for dataset, score in zip(("x", "y"), scores):
            tid = f"t{i}{dataset}"
            rows.append({"trial_id": tid, "model": "m", "method": "lora", "dataset": dataset,
                         "hparams": {"learning_rate": lr, "batch_size": 8}, "seed": 0, "config": {}})
            outcomes.append((tid, status, score))
    with open_store(tmp_path / "old.db") as store:
        store.sync_trials("old", spec, rows)
        for tid, status, score in outcomes:
            store.mark_running(tid)
            store.finish(tid, status, metrics={"accuracy": score}, totals={"samples": 8})
    found, fixed = candidate_configs("m", "lora", source=str(tmp_path / "old.db"), k=2)
    lrs = sorted(c["learning_rate"] for _, c in found)
    assert lrs == [1e-3, 3e-3]  # the stopped config's partial scores do not rank it first
    assert fixed == {"epochs": 3, "max_length": 256}  # the source's own eval points and outputs stay behind
    with pytest.raises(ConfigError, match="ranks no full configurations"):
        candidate_configs("m", "full", source=str(tmp_path / "old.db"))


def test_a_budget_picks_k_and_rungs_and_the_plan_is_said_before_training(tiny_model_dir: Path, task,
                                                                        tmp_path: Path, caplog) -> None:
    caplog.set_level("INFO", logger="tunescout")
    out = tmp_path / "tune"
    args = ["tune", "--model", str(tiny_model_dir), "--method", "lora", "--train", str(task[0]), "--eval",
            str(task[1]), "--metric", "accuracy", "--from", str(_table(tmp_path / "grid.csv")), "--budget", "0.6",
            "--out", str(out), *SMALL]
    assert main(args) == 0
    messages = [r.getMessage() for r in caplog.records]
    plan = next(i for i, m in enumerate(messages) if m.startswith("plan: "))
    first = next(i for i, m in enumerate(messages) if m.startswith("start t"))
    assert plan < first and "of the 3-configuration grid; budget 0.6" in messages[plan]
    # 0.6 x 3 = 1.8 runs: k=3 at rungs [0.1, 0.25] (eta 3) costs 0.3 + 0.15 + 0.75 = 1.2; at [0.25] 0.75 + 0.75 = 1.5
    assert "3 candidates" in messages[plan] and "'rungs': [0.25]" in messages[plan]
    with open_store(out / "tune.db", readonly=True) as store:
        assert len(store.trials()) == 3
    from peft import AutoPeftModelForCausalLM

    assert AutoPeftModelForCausalLM.from_pretrained(out / "best") is not None  # loads on its own
    page = (out / "report.html").read_text()
    assert "Winner: trial t" in page and str(out / "best") in page


def test_plan_budget_fits_the_most_candidates_and_never_less_than_the_winners_run() -> None:
    from tunescout.workflows.tune import plan_budget

    assert (lambda p: (p.k, p.rungs))(plan_budget(8, 2.4)) == (8, [0.1, 0.25])  # 0.8 + 0.45 + 0.75 = 2.0
    # 1.5 runs: [0.25] fits 3 (0.75 + 0.75); [0.1, 0.25] fits 4 (0.4 + 0.3 + 0.75 = 1.45; 5 cost 1.55)
    assert (lambda p: (p.k, p.rungs))(plan_budget(8, 1.5)) == (4, [0.1, 0.25])
    # a batch of 32 on 64 samples pauses at its first step, 50%, whatever the rung: fewer fit
    from tunescout.workflows.tune import pause_fractions

    rows = [{"planned_samples": 64, "config": {"batch_size": 32}}] * 8
    assert pause_fractions(rows)(8, [0.1, 0.25]) == [0.5, 0.5]
    coarse = plan_budget(8, 2.4, where=pause_fractions(rows))
    assert coarse.k < 8 and coarse.runs <= 2.4
    small = plan_budget(8, 0.8)
    assert small.k == 1 and small.rungs == [] and "less than one full run" in small.note
    assert plan_budget(3, 100).k == 3


def test_candidates_fit_the_dataset_and_fewer_than_k_says_why(tiny_model_dir: Path, caplog) -> None:
    from tunescout.workflows.tune import fit_to_dataset

    notes: list[str] = []
    fitted = fit_to_dataset([("p1", {"batch_size": 3840, "learning_rate": 2e-5}),
                             ("p2", {"batch_size": 7680, "learning_rate": 2e-5}),
                             ("p3", {"learning_rate": 1e-4})], {}, 64, notes.append)
    assert fitted == [("p1", {"batch_size": 64, "learning_rate": 2e-5}), ("p3", {"batch_size": 64, "learning_rate": 1e-4})]
    assert "batch_size 3840 is larger than the 64 training rows" in notes[0] and "run once" in notes[2]
    said: list[str] = []
    found, _ = candidate_configs(str(tiny_model_dir), "lora", k=4, say=said.append)  # a folder named *llama*
    assert len(found) == 1 and "--k 4: 1 candidate(s), the shipped lora presets for llama models" in said[0]
    assert "preset cbs-llama3-8b-lora was made for llama models of 8B" in said[1] and "M parameters" in said[1]
    said.clear()
    candidate_configs(str(tiny_model_dir), "lora", preset="cbs-mistral-7b-lora", k=3, say=said.append)
    assert "one candidate, the preset cbs-mistral-7b-lora given" in said[0]
    assert "made for mistral models of 7B" in said[1]


def _curves_store(path: Path) -> Path:
    """A reference grid run to the end: 3 tasks x 3 learning rates, LoRA, 10 steps of 10 samples,
    evaluated at 10 and 30 samples; 1e-3 is best on every task, and its early scores say so."""
    finals = {1e-4: 0.3, 1e-3: 0.9, 3e-3: 0.6}
    tasks = ("x", "y", "z")
    spec = {"name": "ref", "models": ["m"], "fixed": {}, "datasets": [{"name": t, "metric": "accuracy"} for t in tasks]}
    rows = [{"trial_id": f"{t}-{i}", "model": "m", "method": "lora", "dataset": t,
             "hparams": {"learning_rate": lr, "batch_size": 4}, "seed": 0, "config": {}, "run_dir": "",
             "planned_samples": 100, "planned_tokens": 1000} for t in tasks for i, lr in enumerate(finals)]
    with open_store(path) as db:
        db.sync_trials("ref", spec, rows)
        for row in rows:
            final = finals[row["hparams"]["learning_rate"]]
            db.mark_running(row["trial_id"])
            for step in range(1, 11):
                record = {"step": step, "samples": 10 * step, "tokens": 100 * step, "loss": 1.0, "grad_norm": 1.0}
                if step in (1, 3):
                    record.update(val_loss=1.0 - final, metrics={"accuracy": final - 0.1 * (3 - step)})
                db.add_telemetry(row["trial_id"], record)
            db.finish(row["trial_id"], "completed", metrics={"accuracy": final, "val_loss": 1.0 - final},
                      totals={"steps": 10, "samples": 100, "tokens": 1000})
    return path


@pytest.mark.parametrize("budget", [["--budget", "0.34"], []], ids=["given", "default"])
def test_a_budget_from_a_store_of_curves_takes_the_rule_chosen_on_its_tasks(tiny_model_dir: Path, task,
                                                                            tmp_path: Path, caplog, budget) -> None:
    """A third of a 3-configuration grid is one run: on every task of the source, CBS's top
    configuration alone reaches the best, so that is the plan, said before anything trains.
    Without --k, --stopping or --budget, ``--from`` spends the default budget, chosen the same way
    (a tenth of this grid is under one run: the top candidate alone)."""
    from tunescout.workflows.tune import DEFAULT_BUDGET

    caplog.set_level("INFO", logger="tunescout")
    out = tmp_path / "tune"
    args = ["tune", "--model", str(tiny_model_dir), "--method", "lora", "--train", str(task[0]), "--eval",
            str(task[1]), "--metric", "accuracy", "--from", str(_curves_store(tmp_path / "ref.db")),
            *budget, "--out", str(out), *SMALL]
    assert main(args) == 0
    messages = [r.getMessage() for r in caplog.records]
    said = budget[1] if budget else f"{DEFAULT_BUDGET:g}"
    chosen = next(m for m in messages if m.startswith(f"--budget {said}: chosen by replaying tune on the 3 tasks"))
    assert chosen.endswith("the top 1, each trained to the end")
    plan = next(m for m in messages if m.startswith("plan: "))
    assert "1 candidates" in plan and "'rule': 'none'" in plan
    with open_store(out / "tune.db", readonly=True) as store:
        [trial] = store.trials()
    assert trial["hparams"]["learning_rate"] == 1e-3
