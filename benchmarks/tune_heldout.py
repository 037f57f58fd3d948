"""Does `tunescout tune` find a held-out task's best configuration for a fraction of its grid?

Leave one task of the reference suite (``benchmarks/reference/``) out, rank the other tasks'
grid with CBS, and tune the held-out task. Every method below is replayed on the reference
grid, which ran every configuration of every task to the end with evaluations at 10% and 25% of
its samples: a method "trains" a configuration by reading its recorded curve up to where the
method would stop it, and pays the tokens the real trial trained up to that point. Replays are
exact for what the methods observe (the same evaluations at the same sample counts), so the
peers run on the same trainer, grid and curves as tunescout.

Methods:

- ``tunescout``: the default ``tune`` (top ``k=5`` of the CBS ranking of the other tasks, promote
  mode, ASHA on validation loss at 25%, eta 3), replayed through the sweep's own promotion code.
- ``tunescout-budget-B``: ``tune --budget B`` (k and rungs planned by :func:`plan_budget`).
- ``tunescout-chosen-B``: k and the rule chosen by replay on the *other* tasks (the lowest mean
  regret there within B of a grid, :func:`choose_policy`), then applied to the held-out task:
  a rule picked across studies, never on the task it is judged on.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tunescout.analysis import rank_results, results_from_store
from tunescout.analysis.replay import replay_stopping
from tunescout.study.export import store_tables
from tunescout.study.store import open_store
from tunescout.workflows.tune import DEFAULT_STOPPING, plan_budget

HERE = Path(__file__).resolve().parent
DEFAULT_STORE = HERE / "results" / "reference" / "reference.db"
DEFAULT_PRESETS = HERE / "results" / "reference" / "presets.db"


@dataclass(frozen=True)
class Curve:
    """One configuration's recorded run on one task: what a method can observe, and its cost."""

    config_id: str
    trial_id: str
    points: tuple[tuple[int, int, float | None, float | None], ...]
    """``(samples, tokens trained, val_loss, task metric)`` at each evaluation, the last the final."""

    @property
    def final(self) -> float:
        return float(self.points[-1][3])

    @property
    def tokens(self) -> int:
        return self.points[-1][1]


@dataclass
class Task:
    name: str
    curves: dict[str, Curve]
    """By config id: every configuration of the grid, run to the end."""

    @property
    def best(self) -> float:
        return max(c.final for c in self.curves.values())

    @property
    def grid_tokens(self) -> int:
        return sum(c.tokens for c in self.curves.values())

    def regret(self, config_id: str) -> float:
        return (self.best - self.curves[config_id].final) / self.best if self.best else 0.0


def load_reference(store: Path) -> tuple[dict[str, Task], pd.DataFrame, dict[str, Any], dict[str, pd.DataFrame]]:
    """The reference grid: per task its curves (completed trials only), the results table CBS
    ranks, the study spec and the store's tables (for replaying tunescout's own rules)."""
    with open_store(store, readonly=True) as db:
        tables, spec = store_tables(db), db.study_spec()
    table = results_from_store(store, include="completed")
    metric_of = {d["name"]: d["metric"] for d in spec["datasets"]}
    config_of = {(r.dataset, r.trial_ids): r.config_id for r in table.itertuples()}  # one seed: one trial id
    tasks: dict[str, Task] = {}
    results, telemetry = tables["results"], tables["telemetry"]
    for t in tables["trials"].to_dict("records"):
        if t["status"] != "completed" or (t["dataset"], t["trial_id"]) not in config_of:
            continue
        mine = results[results["trial_id"] == t["trial_id"]]
        tel = telemetry[telemetry["trial_id"] == t["trial_id"]].set_index("samples")["tokens"]
        points = []
        for samples, group in mine.groupby("samples"):
            values = dict(zip(group["name"], group["value"]))
            points.append((int(samples), int(tel.get(samples, t["tokens"])), values.get("val_loss"),
                           values.get(metric_of[t["dataset"]])))
        cid = config_of[(t["dataset"], t["trial_id"])]
        tasks.setdefault(t["dataset"], Task(t["dataset"], {})).curves[cid] = Curve(cid, t["trial_id"], tuple(points))
    return tasks, table, spec, tables


def cbs_order(table: pd.DataFrame, held_out: str) -> list[str]:
    """The grid ranked by CBS on every task but ``held_out``: what `tune --from` takes from the top."""
    ranking = next(iter(rank_results(table[table["dataset"] != held_out], group_by=None).values()))
    return list(ranking["config_id"])


# --- tunescout: tune's own promotion code, replayed --------------------------------------------


_REPLAYED: dict[tuple, tuple[str, int]] = {}
"""Replays already made in this process, by task, candidates in order and rule: choosing a rule
replays each one on every other task, and many candidate lists recur."""


def replay_tune(task: Task, order: Sequence[str], k: int, rule: dict[str, Any], spec: dict[str, Any],
                tables: dict[str, pd.DataFrame]) -> tuple[str, int]:
    """(winner's config id, tokens trained) of tune's study of the top ``k`` of ``order``."""
    chosen = [c for c in order if c in task.curves][:k]
    key = (id(tables), task.name, tuple(chosen), json.dumps(rule, sort_keys=True))
    if key not in _REPLAYED:
        _REPLAYED[key] = _replay_tune(task, chosen, rule, spec, tables)
    return _REPLAYED[key]


def _replay_tune(task: Task, chosen: list[str], rule: dict[str, Any], spec: dict[str, Any],
                 tables: dict[str, pd.DataFrame]) -> tuple[str, int]:
    ids = [task.curves[c].trial_id for c in chosen]
    if not rule.get("rungs"):  # no stopping: every candidate to the end
        winner = max(chosen, key=lambda c: task.curves[c].final)
        return winner, sum(task.curves[c].tokens for c in chosen)
    trials = tables["trials"][tables["trials"]["trial_id"].isin(ids)]
    replay = replay_stopping(tables["telemetry"], trials, tables["results"], spec, [rule])
    rows = replay.trials.set_index("trial_id")
    kept = [c for c in chosen if not rows.at[task.curves[c].trial_id, "stopped"]]
    winner = max(kept, key=lambda c: task.curves[c].final)  # tune keeps the best completed candidate
    return winner, int(rows["tokens_used"].sum())


# --- tunescout, its rule chosen on the other tasks ----------------------------------------------


def policy_space(grid: int) -> list[tuple[int, dict[str, Any]]]:
    """The (k, rule) pairs a choice is made among: the top k candidates, each trained to the end or
    ranked by ASHA in promote mode on validation loss or on the task metric, at the grid's rungs."""
    space: list[tuple[int, dict[str, Any]]] = []
    for k in range(1, grid + 1):
        space.append((k, {}))
        for rungs in ([0.1], [0.25], [0.1, 0.25]):
            for eta in sorted({2, 3, k} - {1}):
                for signal in ("val_loss", "metric"):
                    space.append((k, {"rule": "asha", "signal": signal, "mode": "promote", "rungs": rungs,
                                      "eta": eta}))
    return space


def _label(k: int, rule: dict[str, Any]) -> str:
    if not rule:
        return f"top {k}, each to the end"
    return f"top {k}, ASHA on {rule['signal']} at {rule['rungs']}, eta {rule['eta']}"


def choose_policy(tasks: dict[str, Task], table: pd.DataFrame, spec: dict[str, Any],
                  tables: dict[str, pd.DataFrame], budget: float) -> tuple[int, dict[str, Any]]:
    """The (k, rule) of :func:`policy_space` with the lowest mean regret over ``tasks`` among those
    whose mean compute is at most ``budget`` of a grid, each task tuned from the CBS ranking of the
    others; ties go to less compute. Given only tasks other than the one it will tune, the choice
    is never made in-sample."""
    grid = len(next(iter(tasks.values())).curves)
    orders = {n: cbs_order(table[table["dataset"].isin(tasks)], n) for n in tasks}
    best: tuple[float, float, int] | None = None
    chosen = (1, {})
    for index, (k, rule) in enumerate(policy_space(grid)):
        outcomes = [replay_tune(t, orders[n], k, rule, spec, tables) for n, t in tasks.items()]
        compute = statistics.fmean(tok / t.grid_tokens for (_, tok), t in zip(outcomes, tasks.values()))
        if compute > budget + 1e-9:
            continue
        regret = statistics.fmean(t.regret(c) for (c, _), t in zip(outcomes, tasks.values()))
        key = (round(regret, 12), round(compute, 12), index)
        if best is None or key < best:
            best, chosen = key, (k, rule)
    return chosen


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
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler

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
                                                   max_concurrent_trials=1),
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


def run(store: Path, seeds: int, budgets: Sequence[float], peers: Sequence[str] = ("optuna", "ray"),
        presets: Path | None = None, choose_budgets: Sequence[float] = ()) -> dict[str, Any]:
    _REPLAYED.clear()
    tasks, table, spec, tables = load_reference(store)
    complete = {n: t for n, t in tasks.items() if len(t.curves) == max(len(x.curves) for x in tasks.values())}
    if len(complete) < 3:
        raise SystemExit(f"{store}: {len(complete)} tasks have their whole grid; leave-one-out needs at least 3")
    grid = len(next(iter(complete.values())).curves)
    table = table[table["dataset"].isin(complete)]
    methods: dict[str, dict[str, dict[str, float]]] = {}

    def record(name: str, task: Task, outcomes: list[tuple[str, int]]) -> None:
        methods.setdefault(name, {})[task.name] = {
            "regret": statistics.fmean(task.regret(c) for c, _ in outcomes),
            "compute": statistics.fmean(tokens for _, tokens in outcomes) / task.grid_tokens}

    for name, task in sorted(complete.items()):
        order = cbs_order(table, name)
        winner, tokens = replay_tune(task, order, 5, DEFAULT_STOPPING, spec, tables)
        record("tunescout", task, [(winner, tokens)])
        for budget in budgets:
            plan = plan_budget(grid, budget * grid, DEFAULT_STOPPING["eta"])
            rule = {**DEFAULT_STOPPING, "rungs": plan.rungs} if plan.rungs else {}
            record(f"tunescout-budget-{budget:g}", task, [replay_tune(task, order, plan.k, rule, spec, tables)])
        for budget in choose_budgets:
            others = {n: t for n, t in complete.items() if n != name}
            k, rule = choose_policy(others, table, spec, tables, budget)
            print(f"{name}: chosen on the other tasks for {budget:g} of a grid: {_label(k, rule)}", flush=True)
            record(f"tunescout-chosen-{budget:g}", task, [replay_tune(task, order, k, rule, spec, tables)])
        spend = tokens
        record("random", task, [run_random(task, spend, s) for s in range(seeds)])
        for kind in ("tpe-hyperband", "grid-sh") if "optuna" in peers else ():
            record(f"optuna-{kind}", task, [run_optuna(task, spend, s, kind) for s in range(seeds)])
        for kind in ("asha", "hyperband") if "ray" in peers else ():
            record(f"ray-{kind}", task, [run_ray(task, spend, s, kind) for s in range(seeds)])
        print(f"{name}: done", flush=True)
    if presets is not None:
        methods.update(fixed_entries(presets, complete))
    return {"model": spec["models"][0], "tasks": sorted(complete), "grid_configs": grid, "commit": _commit(),
            "methods": {m: summarise(per_task) for m, per_task in methods.items()}}


def format_table(doc: dict[str, Any]) -> str:
    lines = ["| method | mean regret | within 1% | within 3% | mean compute (of the grid) |", "|---|---|---|---|---|"]
    for name, m in doc["methods"].items():
        lines.append(f"| {name} | {m['mean_regret']:.1%} | {m['within_1pct']:.0%} | {m['within_3pct']:.0%} | "
                     f"{m['mean_compute']:.1%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "tune_heldout.json")
    parser.add_argument("--seeds", type=int, default=5, help="runs of each randomised method, averaged")
    parser.add_argument("--presets", type=Path, default=DEFAULT_PRESETS,
                        help="store of benchmarks/reference/presets.yaml (left out when it does not exist)")
    parser.add_argument("--budgets", type=float, nargs="*", default=[0.1, 0.2, 0.3])
    parser.add_argument("--choose", type=float, nargs="*", default=[0.1],
                        help="budgets (fractions of a grid) for which k and the rule are chosen on the other tasks")
    parser.add_argument("--peers", nargs="*", default=["optuna", "ray"], choices=["optuna", "ray"],
                        help="peer libraries to run (Ray Tune starts an actor per trial: minutes on a busy 2-core machine)")
    args = parser.parse_args()
    if "ray" in args.peers:
        import ray

        # a Ray of its own ("local"), never a cluster that happens to run here (its other jobs would share it)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    doc = run(args.store, args.seeds, args.budgets, args.peers, args.presets if args.presets.exists() else None,
              args.choose)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(format_table(doc))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
