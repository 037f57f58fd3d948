"""Does `tunescout tune` find a held-out task's best configuration for a fraction of its grid?

Leave one task of the reference suite (``benchmarks/reference/``) out, rank the other tasks'
grid with CBS, and tune the held-out task. Every method below is replayed on the reference
grid, which ran every configuration of every task to the end with evaluations at 10% and 25% of
its samples: a method "trains" a configuration by reading its recorded curve up to where the
method would stop it, and pays the tokens the real trial trained up to that point. Replays are
exact for what the methods observe (the same evaluations at the same sample counts), so the
peers run on the same trainer, grid and curves as tunescout.

Methods:

- ``tunescout``: the default ``tune --from STORE`` (``--budget 0.1``,
  :data:`~tunescout.workflows.tune.DEFAULT_BUDGET`): k and the rule chosen by replay on the
  *other* tasks (the lowest mean regret there within the budget,
  :func:`tunescout.analysis.choice.choose_policy`), then applied to the held-out task through the
  sweep's own promotion code: a rule picked across studies, never on the task it is judged on.
- ``tunescout-budget-B``: the same with ``--budget B``.
- ``tunescout-k5``: ``tune --k 5`` (the top 5 of the CBS ranking of the other tasks, ASHA on
  validation loss at 25%, eta 3: the default before the budget was).
- ``tunescout-plan-B``: ``tune --budget B`` from a source without curves (a results table): k
  and rungs planned by :func:`plan_budget` for ASHA on validation loss.
- ``optuna-tpe-hyperband``: Optuna's TPE sampler with its Hyperband pruner over the grid.
- ``optuna-grid-sh``: Optuna's grid sampler with successive halving.
- ``ray-asha``, ``ray-hyperband``: Ray Tune's ASHA and HyperBand schedulers over the grid.
- ``random``: configurations drawn at random and trained to the end.
- ``fixed:<config>``: what a user gets without searching (the shipped presets and the recipe's
  defaults), run on the same tasks by ``benchmarks/reference/presets.yaml`` (``--presets``); their
  learning rates lie outside the grid, so they are read from their own store, not replayed.
The peers and ``random`` get tunescout's compute on each task (they stop launching trials once
they have spent it) and report the task metric at the evaluation points, as their users do.
Each is run over ``--seeds`` seeds and averaged.

A method's regret on a task is (best final score of the task's grid - final score of the
configuration it returns) / best; its compute is the tokens it trained over the tokens of the
task's whole grid.

``--real B`` also runs ``tune --from STORE --budget B`` for real on each held-out task (what the
replays stand for): the store it ranks is a copy without that task, the task's files are the
suite's own, and the entry ``tunescout-budget-B-real`` adds, per task, the winner it trained, its
score, and its wall time over the task's grid's. A real run trains the same configurations on
the same data as the grid did, so its winner and score should match the replay's.

Run: ``.venv/bin/python benchmarks/tune_heldout.py [--store benchmarks/results/reference/reference.db]``
(``pip install -e '.[bench]'`` for Optuna and Ray). Writes ``benchmarks/results/tune_heldout.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from tunescout.analysis import results_from_store
from tunescout.analysis.choice import (TaskCurves, cbs_order, choose_policy, describe_policy, load_curves,
                                       replay_tune)
from tunescout.workflows.tune import DEFAULT_BUDGET, DEFAULT_K, DEFAULT_STOPPING, plan_budget

HERE = Path(__file__).resolve().parent
DEFAULT_STORE = HERE / "results" / "reference" / "reference.db"
DEFAULT_PRESETS = HERE / "results" / "reference" / "presets.db"


# The reference grid's curves and tune's replay are the library's (tunescout.analysis.choice):
# the benchmark judges the code `tune --budget` runs.
load_reference = load_curves
Task = TaskCurves


# --- peers: the real libraries on the recorded curves ------------------------------------------


class Ledger:
    """Tokens a peer has trained on one task, and whether its budget is spent."""

    def __init__(self, budget: float) -> None:
        self.budget, self.spent = budget, 0

    def pay(self, tokens: int) -> None:
        self.spent += tokens

    @property
    def exhausted(self) -> bool:
        return self.spent >= self.budget


def _best_completed(finals: dict[str, float]) -> str:
    return max(finals, key=finals.get)


def run_optuna(task: Task, budget: float, seed: int, kind: str) -> tuple[str, int]:
    """Optuna over the grid's configurations until ``budget`` tokens are spent: TPE with the
    Hyperband pruner (``kind='tpe-hyperband'``) or the grid sampler with successive halving."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    configs = sorted(task.curves)
    planned = task.curves[configs[0]].points[-1][0]
    first = task.curves[configs[0]].points[0][0]
    if kind == "tpe-hyperband":
        sampler = optuna.samplers.TPESampler(seed=seed)
        pruner = optuna.pruners.HyperbandPruner(min_resource=first, max_resource=planned, reduction_factor=3)
    else:
        sampler = optuna.samplers.GridSampler({"config": configs}, seed=seed)
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=3)
    ledger, finals = Ledger(budget), {}

    def objective(trial: optuna.Trial) -> float:
        curve = task.curves[trial.suggest_categorical("config", configs)]
        for samples, tokens, _, metric in curve.points[:-1]:
            trial.report(metric, samples)
            if trial.should_prune():
                ledger.pay(tokens)
                raise optuna.TrialPruned()
        ledger.pay(curve.tokens)
        finals[curve.config_id] = curve.final
        return curve.final

    # Hyperband assigns trials to brackets by a hash of the study's name: a fixed name, not Optuna's
    # random default, so that two runs make the same decisions.
    study = optuna.create_study(study_name=f"{task.name}-{kind}-{seed}", direction="maximize", sampler=sampler,
                                pruner=pruner)
    while not ledger.exhausted and len(study.trials) < 10 * len(configs):
        study.optimize(objective, n_trials=1)
        if kind == "grid-sh" and len(study.trials) >= len(configs):
            break
    return (_best_completed(finals) if finals else _cheapest_guess(task)), ledger.spent


def _cheapest_guess(task: Task) -> str:
    """What a method that completed nothing returns: its first configuration (it must return one)."""
    return sorted(task.curves)[0]


def _ray_storage() -> str:
    """Ray Tune's result folder: a temporary one (removed at exit), not ``~/ray_results``."""
    import atexit
    import shutil
    import tempfile

    global _RAY_DIR
    if _RAY_DIR is None:
        _RAY_DIR = tempfile.mkdtemp(prefix="tune-heldout-ray-")
        atexit.register(shutil.rmtree, _RAY_DIR, ignore_errors=True)
    return _RAY_DIR


_RAY_DIR: str | None = None


def run_ray(task: Task, budget: float, seed: int, kind: str) -> tuple[str, int]:
    """Ray Tune over the grid (each configuration once, in a seeded order, one at a time) with
    ASHA or HyperBand on the task metric, until ``budget`` tokens are spent."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler

    if not ray.is_initialized():
        # A Ray of its own ("local"). Left to Tuner.fit, ray.init joins the cluster named in
        # /tmp/ray/ray_current_cluster, which a crashed instance leaves behind: it then waits minutes
        # on a dead address and fails; a live one would share its other jobs' CPUs.
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    configs = sorted(task.curves)
    random.Random(seed).shuffle(configs)
    planned = task.curves[configs[0]].points[-1][0]
    first = task.curves[configs[0]].points[0][0]
    curves = {c: task.curves[c].points for c in configs}

    def trainable(config: dict[str, Any]) -> None:
        for samples, tokens, _, metric in curves[config["config"]]:
            tune.report({"metric": metric, "samples": samples, "tokens": tokens})

    scheduler = (ASHAScheduler(time_attr="samples", max_t=planned, grace_period=first, reduction_factor=3)
                 if kind == "asha" else
                 HyperBandScheduler(time_attr="samples", max_t=planned, reduction_factor=3))
    ledger = Ledger(budget)

    class BudgetStopper(tune.Stopper):
        def __init__(self) -> None:
            self.last: dict[str, int] = {}

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            ledger.pay(result["tokens"] - self.last.get(trial_id, 0))
            self.last[trial_id] = result["tokens"]
            return False

        def stop_all(self) -> bool:
            return ledger.exhausted

    tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}),
                       param_space={"config": tune.grid_search(configs)},
                       tune_config=tune.TuneConfig(metric="metric", mode="max", scheduler=scheduler,
                                                   max_concurrent_trials=1,
                                                   reuse_actors=True),  # one actor for all: a start is seconds
                       run_config=tune.RunConfig(stop=BudgetStopper(), verbose=0, storage_path=_ray_storage()))
    grid = tuner.fit()
    finals = {}
    for result in grid:
        if result.metrics and result.metrics.get("samples") == planned:
            finals[result.config["config"]] = float(result.metrics["metric"])
    return (_best_completed(finals) if finals else configs[0]), ledger.spent


def run_random(task: Task, budget: float, seed: int) -> tuple[str, int]:
    """Configurations in a random order, each trained to the end, until ``budget`` is spent."""
    configs = sorted(task.curves)
    random.Random(seed).shuffle(configs)
    ledger, finals = Ledger(budget), {}
    for c in configs:
        if ledger.exhausted:
            break
        ledger.pay(task.curves[c].tokens)
        finals[c] = task.curves[c].final
    return _best_completed(finals), ledger.spent


# --- the benchmark ------------------------------------------------------------------------------


Method = Callable[[Task, list[str], float, int], tuple[str, int]]


def summarise(per_task: dict[str, dict[str, float]]) -> dict[str, Any]:
    regrets = [v["regret"] for v in per_task.values()]
    return {"mean_regret": statistics.fmean(regrets),
            "within_1pct": sum(r <= 0.01 + 1e-12 for r in regrets) / len(regrets),
            "within_3pct": sum(r <= 0.03 + 1e-12 for r in regrets) / len(regrets),
            "mean_compute": statistics.fmean(v["compute"] for v in per_task.values()),
            "per_task": per_task}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=HERE).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def fixed_entries(presets: Path, tasks: dict[str, Task]) -> dict[str, dict[str, dict[str, float]]]:
    """Each configuration of the presets store, per task of ``tasks``: its regret against the
    task's grid best and its compute (the tokens of its one run over the grid's). A configuration
    missing a task is left out."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in results_from_store(presets, include="completed").itertuples():
        task = tasks.get(row.dataset)
        if task is None:
            continue
        regret = (task.best - float(row.score)) / task.best if task.best else 0.0
        out.setdefault(f"fixed:{row.config_id}", {})[task.name] = {
            "regret": max(regret, 0.0), "compute": float(row.tokens) / task.grid_tokens}
    return {name: per_task for name, per_task in out.items() if set(per_task) == set(tasks)}


def store_without(store: Path, task: str, dest: Path) -> Path:
    """A copy of ``store`` without ``task``: what ``tune --from`` may know when ``task`` is the new
    dataset (its trials of every spec version, their records, and its entry in the study spec)."""
    import sqlite3
    from contextlib import closing

    dest.unlink(missing_ok=True)
    with closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as src, closing(sqlite3.connect(dest)) as out:
        src.backup(out)
    with closing(sqlite3.connect(dest)) as db, db:
        db.execute("DELETE FROM trials WHERE dataset = ?", (task,))
        for table in ("results", "telemetry", "decisions"):
            db.execute(f"DELETE FROM {table} WHERE trial_id NOT IN (SELECT trial_id FROM trials)")
        for name, text in db.execute("SELECT name, spec FROM studies").fetchall():
            spec = json.loads(text)
            spec["datasets"] = [d for d in spec.get("datasets", []) if d["name"] != task]
            db.execute("UPDATE studies SET spec = ? WHERE name = ?", (json.dumps(spec), name))
    return dest


def run_real(store: Path, budget: float, names: Sequence[str], out: Path, workers: int = 2,
             study: Path = HERE / "reference" / "study.yaml") -> dict[str, dict[str, Any]]:
    """``tune --from <store without the task> --budget B`` trained for real on each task of
    ``names`` (the suite's files and evaluation settings, from ``study``); per task its regret
    against the grid's best, its compute (tokens, and wall time) over the grid's, and its winner."""
    from tunescout.analysis import config_id_of
    from tunescout.study.spec import load_study
    from tunescout.study.store import open_store
    from tunescout.workflows.tune import tune

    tasks, _, spec, tables = load_reference(store)
    files = {d.name: d for d in load_study(study).datasets}
    walls = tables["trials"].set_index("trial_id")["wall_s"]
    out.mkdir(parents=True, exist_ok=True)
    per_task: dict[str, dict[str, Any]] = {}
    for name in names:
        task, d = tasks[name], files[name]
        source = store_without(store, name, out / f"without-{name}.db")
        result = tune(spec["models"][0], "lora", d.train, d.eval, d.metric, out / name, source=str(source),
                      budget=budget, workers=workers, max_new_tokens=d.max_new_tokens, eval_limit=d.eval_limit,
                      say=lambda m: print(f"{name}: {m}", flush=True))
        with open_store(result.store, readonly=True) as db:
            trials = db.trials()
        winner = next(f for f in result.fates if f.get("winner"))
        grid_wall = float(sum(walls[c.trial_id] for c in task.curves.values()))
        per_task[name] = {"regret": max((task.best - winner["score"]) / task.best, 0.0) if task.best else 0.0,
                          "compute": sum(t["tokens"] for t in trials) / task.grid_tokens,
                          "wall": sum(t["wall_s"] for t in trials) / grid_wall if grid_wall else None,
                          "winner": config_id_of(winner["config"]), "score": winner["score"]}
        print(f"{name}: real tune --budget {budget:g}: {per_task[name]}", flush=True)
    return per_task


def run(store: Path, seeds: int, budgets: Sequence[float], peers: Sequence[str] = ("optuna", "ray"),
        presets: Path | None = None) -> dict[str, Any]:
    commit = _commit()  # the code that runs, not whatever is committed while it runs
    tasks, table, spec, tables = load_reference(store)
    complete = {n: t for n, t in tasks.items() if len(t.curves) == max(len(x.curves) for x in tasks.values())}
    if len(complete) < 3:
        raise SystemExit(f"{store}: {len(complete)} tasks have their whole grid; leave-one-out needs at least 3")
    grid = len(next(iter(complete.values())).curves)
    table = table[table["dataset"].isin(complete)]
    methods: dict[str, dict[str, dict[str, float]]] = {}
    replays: dict = {}  # a task's replay under the same candidates and rule, whichever task is held out

    def record(name: str, task: Task, outcomes: list[tuple[str, int]]) -> None:
        methods.setdefault(name, {})[task.name] = {
            "regret": statistics.fmean(task.regret(c) for c, _ in outcomes),
            "compute": statistics.fmean(tokens for _, tokens in outcomes) / task.grid_tokens}

    for name, task in sorted(complete.items()):
        order = cbs_order(table, name)
        others = {n: t for n, t in complete.items() if n != name}
        record("tunescout-k5", task, [replay_tune(task, order, DEFAULT_K, DEFAULT_STOPPING, spec, tables, replays)])
        for budget in sorted({DEFAULT_BUDGET, *budgets}):
            policy = choose_policy(others, table, spec, tables, budget, replays)
            print(f"{name}: --budget {budget:g}, chosen on the other tasks: {describe_policy(policy)}", flush=True)
            outcome = replay_tune(task, order, *policy, spec, tables, replays)
            record("tunescout" if budget == DEFAULT_BUDGET else f"tunescout-budget-{budget:g}", task, [outcome])
            if budget == DEFAULT_BUDGET:
                spend = outcome[1]  # the peers get the default's compute, in tokens
            plan = plan_budget(grid, budget * grid, DEFAULT_STOPPING["eta"])
            rule = {**DEFAULT_STOPPING, "rungs": plan.rungs} if plan.rungs else {}
            record(f"tunescout-plan-{budget:g}", task, [replay_tune(task, order, plan.k, rule, spec, tables, replays)])
        record("random", task, [run_random(task, spend, s) for s in range(seeds)])
        for kind in ("tpe-hyperband", "grid-sh") if "optuna" in peers else ():
            record(f"optuna-{kind}", task, [run_optuna(task, spend, s, kind) for s in range(seeds)])
        for kind in ("asha", "hyperband") if "ray" in peers else ():
            record(f"ray-{kind}", task, [run_ray(task, spend, s, kind) for s in range(seeds)])
        print(f"{name}: done", flush=True)
    if presets is not None:
        methods.update(fixed_entries(presets, complete))
    return {"model": spec["models"][0], "tasks": sorted(complete), "grid_configs": grid, "commit": commit,
            "methods": {m: summarise(per_task) for m, per_task in methods.items()}}


SEPARATION = 0.1
"""A task takes part when its best configuration beats its median by at least this much (in its
metric): on a task where every configuration scores alike, any method is "within 1%"."""


def separation(tasks: dict[str, Task]) -> dict[str, float]:
    """Best minus median final score of each task's grid."""
    return {name: task.best - statistics.median(c.final for c in task.curves.values())
            for name, task in sorted(tasks.items())}


def format_table(doc: dict[str, Any]) -> str:
    lines = ["| method | mean regret | within 1% | within 3% | mean compute (of the grid) |", "|---|---|---|---|---|"]
    for name, m in doc["methods"].items():
        lines.append(f"| {name} | {m['mean_regret']:.1%} | {m['within_1pct']:.0%} | {m['within_3pct']:.0%} | "
                     f"{m['mean_compute']:.1%} |")
    return "\n".join(lines)


def format_per_task(doc: dict[str, Any], names: Sequence[str] | None = None) -> str:
    """Each task's regret (and compute) under each method of ``names`` (default: every method
    measured on every task), a task per row."""
    names = [n for n in (names or doc["methods"]) if set(doc["methods"][n]["per_task"]) == set(doc["tasks"])]
    lines = ["| task | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for task in doc["tasks"]:
        cells = (doc["methods"][n]["per_task"][task] for n in names)
        lines.append(f"| {task} | " + " | ".join(f"{c['regret']:.1%} ({c['compute']:.1%})" for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "tune_heldout.json")
    parser.add_argument("--seeds", type=int, default=5, help="runs of each randomised method, averaged")
    parser.add_argument("--presets", type=Path, default=DEFAULT_PRESETS,
                        help="store of benchmarks/reference/presets.yaml (left out when it does not exist)")
    parser.add_argument("--budgets", type=float, nargs="*", default=[0.2, 0.3],
                        help="budgets replayed beside the default's (0.1)")
    parser.add_argument("--peers", nargs="*", default=["optuna", "ray"], choices=["optuna", "ray"],
                        help="peer libraries to run (Ray Tune: about 30 s a run on a busy 2-core machine)")
    parser.add_argument("--real", type=float, default=None, metavar="B",
                        help="also run `tune --from --budget B` for real on every held-out task (hours on a CPU)")
    parser.add_argument("--real-tasks", nargs="*", default=None, help="only these tasks for --real")
    parser.add_argument("--real-out", type=Path, default=HERE / "out" / "tune-heldout-real",
                        help="where the real runs keep their stores and models (resumable)")
    args = parser.parse_args()
    tasks, *_ = load_reference(args.store)
    for name, gap in separation(tasks).items():
        print(f"{name}: best - median = {gap:.3f}{'' if gap >= SEPARATION - 1e-9 else f'  (under {SEPARATION}: does not separate)'}")
    doc = run(args.store, args.seeds, args.budgets, args.peers, args.presets if args.presets.exists() else None)
    if args.real is not None:
        real = run_real(args.store, args.real, args.real_tasks or doc["tasks"], args.real_out)
        doc["methods"][f"tunescout-budget-{args.real:g}-real"] = summarise(real)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(format_table(doc))
    print("\nregret (compute) per task:")
    print(format_per_task(doc))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
