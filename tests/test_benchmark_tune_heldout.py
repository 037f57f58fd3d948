"""benchmarks/tune_heldout.py on a made-up reference grid whose answers are known: the replay of
tune picks what promotion keeps, every method pays what it trained, and the JSON has its schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunescout.study.store import open_store

SPEC_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "tune_heldout.py"
LRS = (1e-4, 3e-4, 1e-3, 3e-3)
TASKS = ("t1", "t2", "t3", "t4")


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script(SPEC_PATH, "tune_heldout")


def _final(task: str, lr: float) -> float:
    """1e-3 is best everywhere but t4, where 3e-4 is; 1e-4 is far behind."""
    best = 3e-4 if task == "t4" else 1e-3
    return 0.9 if lr == best else {1e-4: 0.3, 3e-4: 0.7, 1e-3: 0.6, 3e-3: 0.5}[lr]


def _write_store(path: Path, name: str, lrs, scores, tasks=TASKS) -> Path:
    """``tasks`` x ``lrs``, 10 steps of 10 samples (100 tokens each), evaluated at 10 and 25 samples
    and at the end, with ``scores(task, lr)`` (or ``scores`` itself) as the final score."""
    spec = {"name": name, "models": ["m"], "datasets": [{"name": t, "metric": "accuracy"} for t in tasks]}
    rows = [{"trial_id": f"{name}-{t}-{i}", "model": "m", "method": "lora", "dataset": t,
             "hparams": {"learning_rate": lr}, "seed": 0, "config": {}, "run_dir": "", "planned_samples": 100,
             "planned_tokens": 1000} for t in tasks for i, lr in enumerate(lrs)]
    with open_store(path) as db:
        db.sync_trials(name, spec, rows)
        for row in rows:
            final = scores(row["dataset"], row["hparams"]["learning_rate"]) if callable(scores) else scores
            db.mark_running(row["trial_id"])
            for step in range(1, 11):
                record = {"step": step, "samples": 10 * step, "tokens": 100 * step, "loss": 1.0, "grad_norm": 1.0}
                if step in (1, 3):  # 10 and 30 samples: at or past the rungs 10% and 25%
                    record.update(val_loss=1.0 - final, metrics={"accuracy": final - 0.1 * (3 - step)})
                db.add_telemetry(row["trial_id"], record)
            db.finish(row["trial_id"], "completed", metrics={"accuracy": final, "val_loss": 1.0 - final},
                      totals={"steps": 10, "samples": 100, "tokens": 1000, "wall_s": 60.0})
    return path


ASHA = {"rule": "asha", "signal": "val_loss", "mode": "promote", "rungs": [0.25], "eta": 3}


@pytest.fixture(autouse=True)
def few_choices(monkeypatch) -> None:
    """`--budget` replays every choice of k and rule on every other task: a handful keeps these
    tests to seconds (tests/analysis/test_choice.py covers the whole space)."""
    import tunescout.analysis.choice as choice

    monkeypatch.setattr(choice, "policy_space", lambda grid: [(1, {}), (2, {}), (grid, ASHA), (grid, {})])


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """4 tasks x 4 learning rates. Validation loss at the rungs ranks like the final score."""
    return _write_store(tmp_path_factory.mktemp("ref") / "ref.db", "ref", LRS, _final)


def test_loads_every_curve_with_its_cost(bench, store) -> None:
    tasks, table, spec, _ = bench.load_reference(store)
    assert sorted(tasks) == list(TASKS) and all(len(t.curves) == 4 for t in tasks.values())
    t4 = tasks["t4"]
    assert t4.best == 0.9 and t4.grid_tokens == 4000
    curve = next(c for c in t4.curves.values() if c.final == 0.3)
    assert [p[:2] for p in curve.points] == [(10, 100), (30, 300), (100, 1000)]
    assert t4.regret(curve.config_id) == pytest.approx(0.6 / 0.9)


def test_tune_replay_keeps_what_promotion_keeps_and_pays_for_it(bench, store) -> None:
    tasks, table, spec, tables = bench.load_reference(store)
    order = bench.cbs_order(table, "t4")  # ranked on t1-t3, where 1e-3 wins
    assert order[0] == "learning_rate=0.001"
    task = tasks["t4"]
    winner, tokens = bench.replay_tune(task, order, 4, {"rule": "asha", "signal": "val_loss", "mode": "promote",
                                                        "rungs": [0.25], "eta": 3}, spec, tables)
    # all four to the rung (25 samples: the record at 30), the best two by val_loss on to the end
    assert winner == "learning_rate=0.0003" and tokens == 4 * 300 + 2 * 700
    assert bench.replay_tune(task, order, 1, {}, spec, tables) == ("learning_rate=0.001", 1000)


@pytest.mark.parametrize("peers", [("optuna",), pytest.param(("ray",), marks=pytest.mark.slow)])
def test_the_benchmark_writes_its_schema_with_every_peer(bench, store, peers, request, monkeypatch) -> None:
    """Ray Tune starts a local instance and its workers: a minute or more, so it is a slow test.
    The address of a cluster that is gone (what a crashed Ray leaves behind) must not be joined."""
    lib = pytest.importorskip(peers[0])
    if peers == ("ray",):
        monkeypatch.setenv("RAY_ADDRESS", "192.0.2.1:6379")  # TEST-NET-1: nothing answers there
        request.addfinalizer(lib.shutdown)  # the instance run_ray started, not left to later tests
    doc = bench.run(store, seeds=2, budgets=[0.5], peers=peers)
    assert set(doc) == {"model", "tasks", "grid_configs", "commit", "methods"}
    assert doc["tasks"] == list(TASKS) and doc["grid_configs"] == 4
    expected = {"tunescout", "tunescout-k5", "tunescout-plan-0.1", "tunescout-budget-0.5", "tunescout-plan-0.5",
                "random",
                *({"optuna-tpe-hyperband", "optuna-grid-sh"} if "optuna" in peers else {"ray-asha", "ray-hyperband"})}
    assert set(doc["methods"]) == expected
    for name, m in doc["methods"].items():
        assert set(m) == {"mean_regret", "within_1pct", "within_3pct", "mean_compute", "per_task"}, name
        assert set(m["per_task"]) == set(TASKS)
        assert all(0 <= v["regret"] <= 1 and 0 < v["compute"] <= 1 for v in m["per_task"].values()), name
    assert doc["methods"]["tunescout-k5"]["mean_regret"] == 0  # promotion by val_loss keeps each task's best
    # the default budget (a tenth of a 4-configuration grid) is under one run: CBS's top configuration
    # alone, 1e-3, which is second on t4; the peers get the same compute
    assert doc["methods"]["tunescout"]["per_task"]["t4"] == {"regret": pytest.approx(1 / 3), "compute": 0.25}
    assert all(v["compute"] <= 0.25 + 1e-9 for v in doc["methods"]["random"]["per_task"].values())
    assert "| tunescout |" in bench.format_table(doc)
    per_task = bench.format_per_task(doc, ["tunescout", "random"]).splitlines()
    assert per_task[0] == "| task | tunescout | random |" and len(per_task) == 2 + len(TASKS)
    assert per_task[-1].startswith("| t4 | 33.3% (25.0%) |")


def test_two_runs_give_the_same_decisions_and_scores(bench, store, tmp_path) -> None:
    """Every randomised method is seeded: the benchmark run twice (here on two copies of the store,
    as from two clones) writes the same numbers."""
    pytest.importorskip("optuna")
    import shutil

    copy = tmp_path / "copy.db"
    shutil.copy2(store, copy)
    first = bench.run(store, seeds=2, budgets=[0.5], peers=("optuna",))
    second = bench.run(copy, seeds=2, budgets=[0.5], peers=("optuna",))
    assert first["methods"] == second["methods"]


def test_fixed_configurations_are_scored_against_each_task_grid(bench, store, tmp_path) -> None:
    """A preset (5e-5, outside the grid) scoring 0.45 everywhere: regret (0.9 - 0.45) / 0.9 on each
    task, for one run's tokens of the task's four; a config missing a task is left out."""
    presets = _write_store(tmp_path / "presets.db", "presets", (5e-5,), 0.45)
    _write_store(tmp_path / "partial.db", "partial", (2e-5,), 0.9, tasks=("t1",))
    tasks, *_ = bench.load_reference(store)
    entries = bench.fixed_entries(presets, tasks)
    assert list(entries) == ["fixed:learning_rate=5e-05"]
    assert entries["fixed:learning_rate=5e-05"] == {t: {"regret": pytest.approx(0.5), "compute": 0.25} for t in TASKS}
    assert bench.fixed_entries(tmp_path / "partial.db", tasks) == {}
    doc = bench.run(store, seeds=1, budgets=[], peers=(), presets=presets)
    assert doc["methods"]["fixed:learning_rate=5e-05"]["mean_regret"] == pytest.approx(0.5)


def test_the_rule_is_chosen_on_the_other_tasks_alone(bench, store, monkeypatch) -> None:
    """Within one run's compute (a quarter of a 4-configuration grid) the best choice on t1-t3 is
    CBS's top configuration to the end; the held-out task never takes part in its own choice."""
    tasks, table, spec, tables = bench.load_reference(store)
    others = {n: t for n, t in tasks.items() if n != "t4"}
    assert bench.choose_policy(others, table, spec, tables, budget=0.25) == (1, {})

    seen = []
    real = bench.choose_policy
    monkeypatch.setattr(bench, "choose_policy", lambda ts, *a, **kw: seen.append(set(ts)) or real(ts, *a, **kw))
    doc = bench.run(store, seeds=1, budgets=[0.25], peers=())
    assert seen == [set(TASKS) - {t} for t in sorted(TASKS) for _budget in (0.1, 0.25)]
    chosen = doc["methods"]["tunescout-budget-0.25"]["per_task"]
    assert chosen["t1"] == {"regret": 0.0, "compute": 0.25}
    assert chosen["t4"]["regret"] == pytest.approx((0.9 - 0.6) / 0.9)  # 1e-3, best elsewhere, is second on t4


def test_the_store_tune_ranks_for_a_held_out_task_knows_nothing_of_it(bench, store, tmp_path) -> None:
    copy = bench.store_without(store, "t4", tmp_path / "without-t4.db")
    tasks, table, spec, tables = bench.load_reference(copy)
    assert sorted(tasks) == ["t1", "t2", "t3"] and set(table["dataset"]) == {"t1", "t2", "t3"}
    assert [d["name"] for d in spec["datasets"]] == ["t1", "t2", "t3"]
    for name in ("trials", "results", "telemetry"):
        assert not tables[name].empty and not tables[name]["trial_id"].str.contains("-t4-").any(), name
    original, *_ = bench.load_reference(store)
    assert all(tasks[n].curves == original[n].curves for n in tasks)  # the others' curves untouched


def test_real_runs_tune_from_the_other_tasks_and_score_the_winner_against_the_grid(bench, store, tmp_path,
                                                                                    monkeypatch) -> None:
    """`tune` itself is replaced here (the real one trains; tests/test_tune.py runs it): what is
    checked is what the benchmark hands it and how it reads the outcome."""
    import tunescout.workflows.tune as tune_module

    for t in TASKS:
        for split in ("train", "eval"):
            (tmp_path / f"{t}_{split}.jsonl").write_text('{"prompt": "q", "completion": "a"}\n')
    datasets = ", ".join(f"{{name: {t}, train: {t}_train.jsonl, eval: {t}_eval.jsonl, metric: accuracy, "
                         f"max_new_tokens: 5, eval_limit: 7}}" for t in TASKS)
    study = tmp_path / "study.yaml"
    study.write_text(f"name: ref\nmodels: [m]\nmethods: [lora]\ndatasets: [{datasets}]\n")
    calls = []

    def fake_tune(model, method, train, eval, metric, out, *, source, budget, workers, max_new_tokens,
                  eval_limit, say):
        ranked, *_ = bench.load_reference(source)
        calls.append((Path(train).name, sorted(ranked), budget, max_new_tokens, eval_limit))
        result = _write_store(Path(out) / "tune.db", "tune", (3e-4, 1e-3), 0.6, tasks=("new",))
        fates = [{"config": {"learning_rate": 3e-4}, "score": 0.6, "winner": True},
                 {"config": {"learning_rate": 1e-3}, "score": 0.5}]
        return tune_module.TuneResult(store=result, report=None, best=None, fates=fates)

    monkeypatch.setattr(tune_module, "tune", fake_tune)
    real = bench.run_real(store, 0.1, ["t4", "t1"], tmp_path / "real", study=study)
    assert calls == [("t4_train.jsonl", ["t1", "t2", "t3"], 0.1, 5, 7),
                     ("t1_train.jsonl", ["t2", "t3", "t4"], 0.1, 5, 7)]
    # two trials of 1000 tokens against a grid of four: half its compute; 0.6 against the best 0.9
    assert real["t4"] == {"regret": pytest.approx(1 / 3), "compute": 0.5, "wall": pytest.approx(0.5),
                          "winner": "learning_rate=0.0003", "score": 0.6}


def test_separation_is_best_minus_median_of_each_task(bench, store) -> None:
    tasks, *_ = bench.load_reference(store)
    # t1-t3 end at 0.3, 0.5, 0.7, 0.9 (median 0.6); t4 at 0.3, 0.5, 0.6, 0.9 (median 0.55)
    assert bench.separation(tasks) == {"t1": pytest.approx(0.3), "t2": pytest.approx(0.3),
                                       "t3": pytest.approx(0.3), "t4": pytest.approx(0.35)}


def test_the_least_compute_of_a_choice_never_exceeds_its_replay(bench, store) -> None:
    """A choice of k and rule whose floor is over the budget is skipped unreplayed: the floor must
    be one. Four candidates to the 25% rung (the record at 30 samples) and one on to the end is
    4 * 300 + 700 of 4000 tokens; the replay promotes two, so it pays more."""
    from tunescout.analysis.choice import least_compute

    tasks, table, spec, tables = bench.load_reference(store)
    order = bench.cbs_order(table, "t4")
    task = tasks["t4"]
    assert least_compute(task, order, ASHA) == pytest.approx((4 * 300 + 700) / 4000)
    assert least_compute(task, order[:2], {}) == pytest.approx(0.5)
    for k in range(1, 5):
        keep_one = {**ASHA, "signal": "metric", "eta": max(k, 2)}
        for rule in ({}, ASHA, {**ASHA, "rungs": [0.1, 0.25], "eta": 2}, keep_one):
            _, tokens = bench.replay_tune(task, order, k, rule, spec, tables)
            assert least_compute(task, order[:k], rule) <= tokens / task.grid_tokens + 1e-12, (k, rule)
