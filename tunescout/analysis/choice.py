"""How many candidates to try, and which stopping rule to judge them by, chosen on other tasks.

A study whose trials ran to the end, with evaluations at the rungs (a reference grid), says what a
`tune` on a new task would have done for every choice: leave one of its tasks out, rank the rest
with CBS, and replay the top ``k`` candidates under a rule on the recorded curves of the task left
out. :func:`choose_policy` picks the choice with the lowest mean regret within a compute budget,
over the study's tasks. The new task takes no part in that choice, so it is never made in-sample;
`tune --budget` uses it when its ``--from`` store holds such a grid, and
``benchmarks/tune_heldout.py`` judges it on tasks left out of the choice too.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from tunescout.analysis.cbs import rank_results
from tunescout.analysis.replay import replay_stopping
from tunescout.analysis.table import results_from_store

__all__ = ["Curve", "Policy", "TaskCurves", "cbs_order", "choose_policy", "describe_policy", "least_compute",
           "load_curves", "policy_space", "replay_tune"]

Policy = tuple[int, dict[str, Any]]
"""``(k, rule)``: the top ``k`` candidates, under a stopping rule (``{}``: each trained to the end)."""


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
class TaskCurves:
    """Every configuration of one task's grid, run to the end, scored by a metric where higher is better."""

    name: str
    curves: dict[str, Curve]
    """By config id."""

    @property
    def best(self) -> float:
        return max(c.final for c in self.curves.values())

    @property
    def grid_tokens(self) -> int:
        return sum(c.tokens for c in self.curves.values())

    def regret(self, config_id: str) -> float:
        """How far a configuration's final score is below the task's best, relative to the best."""
        return (self.best - self.curves[config_id].final) / self.best if self.best else 0.0


def load_curves(store: str | Path, method: str | None = None
                ) -> tuple[dict[str, TaskCurves], pd.DataFrame, dict[str, Any], dict[str, pd.DataFrame]]:
    """A study store's completed trials as curves per task (of ``method`` when given), with the
    results table CBS ranks, the study spec and the store's tables (for replaying rules).

    Only tasks scored by a metric where higher is better, with every configuration of the study's
    grid completed, are kept: regret is read relative to the best, and a partial grid has no best.
    """
    from tunescout.evaluate.metrics import get_metric
    from tunescout.study.export import store_tables
    from tunescout.study.store import open_store

    with open_store(store, readonly=True) as db:
        tables, spec = store_tables(db), db.study_spec()
    table = results_from_store(store, include="completed")
    if method is not None and "method" in table.columns:
        table = table[table["method"] == method]
    metric_of = {d["name"]: d["metric"] for d in spec["datasets"]}
    config_of = {(r.dataset, r.trial_ids): r.config_id for r in table.itertuples()}  # one seed: one trial id
    tasks: dict[str, TaskCurves] = {}
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
        tasks.setdefault(t["dataset"], TaskCurves(t["dataset"], {})).curves[cid] = Curve(cid, t["trial_id"],
                                                                                         tuple(points))
    grid = max((len(t.curves) for t in tasks.values()), default=0)
    tasks = {n: t for n, t in tasks.items() if len(t.curves) == grid and get_metric(metric_of[n]).higher_is_better}
    return tasks, table[table["dataset"].isin(tasks)], spec, tables


def cbs_order(table: pd.DataFrame, held_out: str) -> list[str]:
    """The grid ranked by CBS on every task but ``held_out``: what `tune --from` takes from the top."""
    ranking = next(iter(rank_results(table[table["dataset"] != held_out], group_by=None).values()))
    return list(ranking["config_id"])


def replay_tune(task: TaskCurves, order: Sequence[str], k: int, rule: dict[str, Any], spec: dict[str, Any],
                tables: dict[str, pd.DataFrame], cache: dict | None = None) -> tuple[str, int]:
    """(winner's config id, tokens trained) of tune's study of the top ``k`` of ``order`` under
    ``rule``, replayed through the sweep's own promotion code. ``cache`` keeps replays already
    made (choosing a rule replays each one on every task, and many candidate lists recur)."""
    chosen = [c for c in order if c in task.curves][:k]
    key = (task.name, tuple(chosen), json.dumps(rule, sort_keys=True))
    if cache is not None and key in cache:
        return cache[key]
    if not rule.get("rungs"):  # no stopping: every candidate to the end
        outcome = max(chosen, key=lambda c: task.curves[c].final), sum(task.curves[c].tokens for c in chosen)
    else:
        ids = [task.curves[c].trial_id for c in chosen]
        # only the candidates' rows: the replay reads no other, and grouping a whole store's
        # telemetry was most of each call's time (a choice replays hundreds of these)
        trials, telemetry, results = (tables[name][tables[name]["trial_id"].isin(ids)]
                                      for name in ("trials", "telemetry", "results"))
        rows = replay_stopping(telemetry, trials, results, spec, [rule]).trials
        rows = rows.set_index("trial_id")
        kept = [c for c in chosen if not rows.at[task.curves[c].trial_id, "stopped"]]
        # tune keeps the best completed candidate
        outcome = max(kept, key=lambda c: task.curves[c].final), int(rows["tokens_used"].sum())
    if cache is not None:
        cache[key] = outcome
    return outcome


def policy_space(grid: int) -> list[Policy]:
    """The choices: the top k candidates (k up to the grid), each trained to the end, or ranked by
    ASHA in promote mode on validation loss or on the task metric at 10%, 25% or both, with
    eta 2, 3 or k (keep one)."""
    space: list[Policy] = []
    for k in range(1, grid + 1):
        space.append((k, {}))
        for rungs in ([0.1], [0.25], [0.1, 0.25]):
            for eta in sorted({2, 3, k} - {1}):
                for signal in ("val_loss", "metric"):
                    space.append((k, {"rule": "asha", "signal": signal, "mode": "promote", "rungs": rungs,
                                      "eta": eta}))
    return space


def describe_policy(policy: Policy) -> str:
    k, rule = policy
    if not rule:
        return f"the top {k}, each trained to the end"
    return f"the top {k}, ASHA on {rule['signal']} at rungs {rule['rungs']}, eta {rule['eta']} (promote)"


_FLOOR_MARGIN = 0.9
""":func:`least_compute` is trusted to within 10%: a choice is skipped unreplayed only when even
nine tenths of its floor exceed the budget."""


def least_compute(task: TaskCurves, order: Sequence[str], rule: dict[str, Any]) -> float:
    """The least share of ``task``'s grid that tune's study of ``order`` can train under ``rule``:
    every candidate to its first rung (its first evaluation at or past that share of its samples),
    and at least one, the winner, on to the end. Without rungs, every candidate to the end."""
    chosen = [task.curves[c] for c in order if c in task.curves]
    if not chosen:
        return 0.0
    if not rule.get("rungs"):
        return sum(c.tokens for c in chosen) / task.grid_tokens

    def at_rung(curve: Curve) -> int:
        share = min(rule["rungs"]) * curve.points[-1][0]
        return next(tokens for samples, tokens, *_ in curve.points if samples >= share)

    rung = [at_rung(c) for c in chosen]
    return (sum(rung) + min(c.tokens - r for c, r in zip(chosen, rung))) / task.grid_tokens


def choose_policy(tasks: dict[str, TaskCurves], table: pd.DataFrame, spec: dict[str, Any],
                  tables: dict[str, pd.DataFrame], budget: float, cache: dict | None = None) -> Policy:
    """The choice of :func:`policy_space` with the lowest mean regret over ``tasks`` among those
    whose mean compute is at most ``budget`` of a task's grid, each task tuned from the CBS ranking
    of the others (ties: less compute, then the earlier choice). Nothing fits a budget under one
    run of the cheapest configuration: then the top candidate alone, trained to the end."""
    grid = len(next(iter(tasks.values())).curves)
    table = table[table["dataset"].isin(tasks)]  # what is not among ``tasks`` takes no part
    orders = {n: cbs_order(table, n) for n in tasks}
    cache = {} if cache is None else cache
    best: tuple[float, float, int] | None = None
    chosen: Policy = (1, {})
    for index, (k, rule) in enumerate(policy_space(grid)):
        floor = statistics.fmean(least_compute(t, orders[n][:k], rule) for n, t in tasks.items())
        if floor * _FLOOR_MARGIN > budget + 1e-9:
            continue  # over budget whatever the replay decides: not replayed (most of a choice's time)
        outcomes = [(t, replay_tune(t, orders[n], k, rule, spec, tables, cache)) for n, t in tasks.items()]
        compute = statistics.fmean(tokens / t.grid_tokens for t, (_, tokens) in outcomes)
        if compute > budget + 1e-9:
            continue
        regret = statistics.fmean(t.regret(c) for t, (c, _) in outcomes)
        key = (round(regret, 12), round(compute, 12), index)
        if best is None or key < best:
            best, chosen = key, (k, rule)
    return chosen
