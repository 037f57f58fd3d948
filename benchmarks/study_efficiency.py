"""Compute against regret: how much of a grid the stopping rules train, and what they lose.

The question tunescout's promise rests on: can a study find the best configuration of each cohort
for a fraction of the grid's compute? Measured on the embedded demo grid, in four steps:

1. **Reference.** The demo study with ``stopping: none``: every trial to the end, evaluated at
   every rung fraction used below, kept as the reference store. Its final scores are the truth.
2. **Replays** on those full curves, through the same code the sweep runs (``replay_stopping``):
   ``dynamics`` (the recipe's signals, and the signals this study's own analysis suggests, which
   is in-sample and labelled so) and ``asha`` (on validation loss, and on the task metric), each
   ``async`` and ``promote``, over a few (eta, rungs). Promotion's compute depends only on its
   schedule, not on its ranking, so ``random`` (successive halving with a random ranking, averaged
   over draws) is the baseline at exactly equal compute, and so is ASHA in promote mode.
3. For each: the fraction of the grid's tokens trained, the mean relative regret (best kept
   trial's final score against the cohort's true best), and the share of cohorts whose kept best
   is within 1% of the true best.
4. **The real run.** The best promote setting (fewest tokens among those keeping the best within
   1% in >= 90% of cohorts, else the best keep rate) runs for real on the same data (same study
   name and contents, so the same trial ids), and is compared with its replay.

Run: ``.venv/bin/python benchmarks/study_efficiency.py [--out benchmarks/out/efficiency]``
(about 8-12 minutes on 2 CPU cores: the reference grid, the real run, and the base model if it
is not cached). Prints the tables and writes ``efficiency.json`` next to the stores.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from tunescout.analysis import (dynamics_correlations, final_scores, replay_stopping, signal_directions,
                                suggest_signals)
from tunescout.analysis.dynamics import planned_samples, records_by_trial
from tunescout.demo.base import ensure_demo_base
from tunescout.demo.run import prepare_demo
from tunescout.study.export import store_tables
from tunescout.study.keys import COHORT
from tunescout.study.spec import load_study
from tunescout.study.stopping import keep_count, rung_samples
from tunescout.study.store import open_store
from tunescout.study.sweep import run_sweep

ETAS = (2, 3)
RUNG_SETS = ([0.1], [0.25], [0.1, 0.25])
TARGET_TOKENS, TARGET_KEPT = 0.35, 0.90
RANDOM_DRAWS = 400


def _study(folder: Path, stopping: dict[str, Any], eval_fractions: list[float]) -> Path:
    """The demo study in ``folder`` with ``stopping``, evaluated at every rung fraction."""
    path = prepare_demo(folder)
    raw = yaml.safe_load(path.read_text())
    raw["stopping"] = stopping
    planned = _planned_samples(path)
    raw["fixed"]["eval_at_samples"] = sorted({rung_samples(f, planned) for f in eval_fractions})
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _planned_samples(path: Path) -> int:
    from tunescout.study.sweep import plan_study

    planned = {r["planned_samples"] for r in plan_study(load_study(path))}
    if len(planned) != 1:
        raise SystemExit(f"the demo's trials plan different sample counts {sorted(planned)}; rungs would differ")
    return planned.pop()


def _run(path: Path, say_every: int = 12) -> tuple[float, dict[str, int]]:
    done = [0]

    def say(message: str) -> None:
        if message.split(" ", 1)[0] in ("completed", "stopped", "diverged", "failed"):
            done[0] += 1
            if done[0] % say_every == 0:
                print(f"    {done[0]} trials finished", flush=True)

    t0 = time.perf_counter()
    counts = run_sweep(load_study(path), on_event=say)
    return time.perf_counter() - t0, counts


def _tables(db: Path) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    with open_store(db, readonly=True) as store:
        return store_tables(store), store.study_spec()


def _rules(suggested: dict[str, str] | None) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for mode in ("async", "promote"):
        for eta in ETAS:
            for rungs in RUNG_SETS:
                base = {"mode": mode, "eta": eta, "rungs": rungs}
                out.append(("dynamics (recipe signals)", {"rule": "dynamics", **base}))
                if suggested:
                    out.append((f"dynamics {suggested} (in-sample)", {"rule": "dynamics", "signals": suggested, **base}))
                out.append(("asha val_loss", {"rule": "asha", "signal": "val_loss", **base}))
                out.append(("asha metric", {"rule": "asha", "signal": "metric", "higher_is_better": True, **base}))
    return out


def _within(cohorts: pd.DataFrame) -> pd.Series:
    """Per replayed cohort: kept best within 1% of the true best (a zero best is within when nothing is lost)."""
    rel = cohorts["regret_rel"]
    return (rel <= 0.01) | (rel.isna() & (cohorts["regret"] == 0))


def _random_promotion(trials: pd.DataFrame, tables: dict[str, pd.DataFrame], spec: dict[str, Any],
                      rungs: list[float], eta: float, seed: int = 0) -> dict[str, float]:
    """Successive halving with a random ranking: tokens, mean regret and within-1% share, averaged over draws."""
    scores = final_scores(trials, tables["results"], spec).set_index("trial_id")
    records = records_by_trial(tables["telemetry"])
    rng = random.Random(seed)
    used_total = full_total = 0.0
    regrets, within = [], []
    for _, g in trials.groupby(list(COHORT), sort=True):
        ids = sorted(g["trial_id"])
        planned = {t: planned_samples(g.set_index("trial_id").loc[t].to_dict(), records[t]) for t in ids}
        sign = 1.0 if bool(scores.at[ids[0], "higher_is_better"]) else -1.0
        oriented = {t: sign * float(scores.at[t, "score"]) for t in ids}
        best = max(oriented.values())
        full = sum(records[t][-1]["tokens"] for t in ids)
        for _ in range(RANDOM_DRAWS):
            alive, used = list(ids), 0.0
            for fraction in rungs:
                keep = set(rng.sample(alive, keep_count(len(alive), eta)))
                for t in alive:
                    if t not in keep:
                        point = rung_samples(fraction, planned[t])
                        used += next(r["tokens"] for r in records[t] if r["samples"] >= point)
                alive = [t for t in alive if t in keep]
            used += sum(records[t][-1]["tokens"] for t in alive)
            kept_best = max(oriented[t] for t in alive)
            regret = best - kept_best
            regrets.append(regret / abs(best) if best else (0.0 if regret == 0 else math.nan))
            within.append(regret == 0 or (best != 0 and regret / abs(best) <= 0.01))
            used_total += used / RANDOM_DRAWS
            full_total += full / RANDOM_DRAWS
    return {"token_fraction": used_total / full_total, "mean_regret_rel": float(np.nanmean(regrets)),
            "within_1pct": float(np.mean(within))}


def _replays(tables: dict[str, pd.DataFrame], spec: dict[str, Any], rules: list[tuple[str, dict[str, Any]]]) -> pd.DataFrame:
    trials = tables["trials"]
    replay = replay_stopping(tables["telemetry"], trials, tables["results"], spec, [r for _, r in rules])
    rows = []
    for (label, rule), summary in zip(rules, replay.summary.to_dict("records")):
        cohorts = replay.cohorts[(replay.cohorts["rule"] == summary["rule"]) & replay.cohorts["replayable"]]
        rows.append({"rule": label, "mode": rule["mode"], "eta": rule["eta"], "rungs": str(rule["rungs"]),
                     "replayable": summary["replayable"], "token_fraction": summary["token_fraction"],
                     "mean_regret_rel": summary["mean_regret_rel"],
                     "within_1pct": float(_within(cohorts).mean()) if len(cohorts) else math.nan,
                     "spec": rule, "reason": summary["reason"]})
    for eta in ETAS:
        for rungs in RUNG_SETS:
            rows.append({"rule": "random (same schedule)", "mode": "promote", "eta": eta, "rungs": str(rungs),
                         "replayable": True, **_random_promotion(trials, tables, spec, rungs, eta), "spec": None,
                         "reason": ""})
    return pd.DataFrame(rows)


def _real_vs_replay(real_db: Path, ref: dict[str, pd.DataFrame], spec: dict[str, Any], replayed: dict[str, Any],
                    wall_s: float) -> dict[str, Any]:
    """The real run against the reference: tokens, regret on the reference's true scores, kept sets."""
    real, _ = _tables(real_db)
    truth = final_scores(ref["trials"], ref["results"], spec).set_index("trial_id")
    real_scores = final_scores(real["trials"], real["results"], spec).set_index("trial_id")
    rows, same_scores = [], []
    for key, g in ref["trials"].groupby(list(COHORT), sort=True):
        ids = list(g["trial_id"])
        sign = 1.0 if bool(truth.at[ids[0], "higher_is_better"]) else -1.0
        best = max(sign * truth.at[t, "score"] for t in ids)
        kept = [t for t in real["trials"].query("status == 'completed'")["trial_id"] if t in ids]
        kept_best = max((sign * truth.at[t, "score"] for t in kept), default=-math.inf)
        regret = best - kept_best
        rows.append({"regret_rel": regret / abs(best) if best else math.nan, "regret": regret})
        same_scores += [abs(real_scores.at[t, "score"] - truth.at[t, "score"]) for t in kept]
    cohorts = pd.DataFrame(rows)
    tokens = real["trials"]["tokens"].sum() / ref["trials"]["tokens"].sum()
    replay = replay_stopping(ref["telemetry"], ref["trials"], ref["results"], spec, [replayed])
    replay_kept = set(replay.trials.query("not stopped")["trial_id"])
    real_kept = set(real["trials"].query("status == 'completed'")["trial_id"])
    return {"token_fraction": float(tokens), "mean_regret_rel": float(cohorts["regret_rel"].mean()),
            "within_1pct": float(_within(cohorts).mean()), "wall_s": wall_s,
            "replay_token_fraction": float(replay.summary.iloc[0]["token_fraction"]),
            "kept_same_as_replay": replay_kept == real_kept, "kept_real": len(real_kept), "kept_replay": len(replay_kept),
            "max_final_score_diff_vs_reference": float(max(same_scores, default=0.0))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/out/efficiency", help="folder for the stores and the JSON")
    parser.add_argument("--fresh", action="store_true", help="rerun the reference grid even if its store exists")
    args = parser.parse_args(argv)
    out = Path(args.out)
    fractions = sorted({f for rungs in RUNG_SETS for f in rungs})
    print("base model:", ensure_demo_base(), flush=True)

    ref_dir = out / "reference"
    if args.fresh:
        shutil.rmtree(ref_dir, ignore_errors=True)
    print("[1/3] reference: the demo grid with stopping: none", flush=True)
    ref_wall, counts = _run(_study(ref_dir, {"rule": "none"}, fractions))
    print(f"    {counts} in {ref_wall:.0f}s", flush=True)
    ref, spec = _tables(ref_dir / "demo.db")
    suggested = suggest_signals(signal_directions(dynamics_correlations(
        ref["telemetry"], ref["trials"], ref["results"], spec, n_boot=1000)))

    print(f"[2/3] replays on the reference curves (suggested signals, in-sample: {suggested})", flush=True)
    table = _replays(ref, spec, _rules(suggested))
    shown = table.drop(columns=["spec", "reason"])
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(shown.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    for r in table[~table["replayable"]].itertuples():
        print(f"    not replayable: {r.rule} {r.mode} eta={r.eta} rungs={r.rungs}: {r.reason}")

    promote = table[(table["mode"] == "promote") & table["spec"].notna() & table["replayable"]]
    meets = promote[(promote["within_1pct"] >= TARGET_KEPT)]
    best = (meets.sort_values(["token_fraction", "mean_regret_rel"]) if len(meets) else
            promote.sort_values(["within_1pct", "token_fraction"], ascending=[False, True])).iloc[0]
    print(f"[3/3] the best promote setting for real: {best['rule']} eta={best['eta']} rungs={best['rungs']}", flush=True)
    real_dir = out / "real"
    shutil.rmtree(real_dir, ignore_errors=True)
    real_wall, counts = _run(_study(real_dir, dict(best["spec"]), fractions))
    print(f"    {counts} in {real_wall:.0f}s", flush=True)
    real = _real_vs_replay(real_dir / "demo.db", ref, spec, dict(best["spec"]), real_wall)
    print("    real run:   " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in real.items()))
    replayed = best.to_dict()
    print(f"    its replay: token_fraction {replayed['token_fraction']:.3f}, mean_regret_rel "
          f"{replayed['mean_regret_rel']:.3f}, within_1pct {replayed['within_1pct']:.3f}")
    asha = table[(table["mode"] == "promote") & (table["eta"] == best["eta"]) & (table["rungs"] == best["rungs"])
                 & table["rule"].str.startswith(("asha", "random"))]
    for r in asha.itertuples():
        print(f"    at equal compute, {r.rule}: mean regret {r.mean_regret_rel:.3f}, within 1% {r.within_1pct:.3f}")
    met = replayed["token_fraction"] <= TARGET_TOKENS and replayed["within_1pct"] >= TARGET_KEPT
    print(f"target (<= {TARGET_TOKENS:.0%} of the grid's tokens, best within 1% in >= {TARGET_KEPT:.0%} of cohorts): "
          f"{'met' if met else 'NOT met'} by the replay; real run {real['token_fraction']:.1%} tokens, "
          f"{real['within_1pct']:.0%} within 1%")
    doc = {"reference_wall_s": ref_wall, "suggested_signals": suggested,
           "replays": json.loads(shown.to_json(orient="records")), "best": {k: replayed[k] for k in (
               "rule", "mode", "eta", "rungs", "token_fraction", "mean_regret_rel", "within_1pct")},
           "real": real, "target_met_by_replay": bool(met)}
    (out / "efficiency.json").write_text(json.dumps(doc, indent=2, default=str))
    print(out / "efficiency.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
