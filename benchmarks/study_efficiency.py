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
   name and contents, so the same trial ids), and is compared with its replay. That choice is
   made in-sample (on the cohorts it is then scored on), so the script also makes it honestly:
   leave one dataset out, choose on the others' cohorts, score on its own, sum over datasets.

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
from tunescout.demo.study import prepare_demo
from tunescout.study.export import store_tables
from tunescout.study.keys import COHORT
from tunescout.study.spec import load_study
from tunescout.stopping.rules import keep_count, rung_samples
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


def _rel(regret: float, best: float) -> float:
    """Relative regret, one rule for every row: regret / |best|; with a best of 0, 0 when nothing is
    lost and NaN otherwise (a cohort whose every score is 0 separates nothing)."""
    if best:
        return regret / abs(best)
    return 0.0 if regret == 0 else math.nan


def _within(rel: float) -> bool:
    return rel == rel and rel <= 0.01  # NaN is not within


def _completed(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The trials every replay and baseline runs on: completed, with telemetry (the replays' set)."""
    trials = tables["trials"]
    return trials[(trials["status"] == "completed") & trials["trial_id"].isin(set(tables["telemetry"]["trial_id"]))]


def _random_promotion(tables: dict[str, pd.DataFrame], spec: dict[str, Any], rungs: list[float], eta: float,
                      seed: int = 0) -> list[dict[str, Any]]:
    """Successive halving with a random ranking, per cohort: tokens, relative regret and within-1%,
    averaged over draws, on the same trials and cut points as the promote replays."""
    trials = _completed(tables)
    scores = final_scores(trials, tables["results"], spec).set_index("trial_id")
    records = records_by_trial(tables["telemetry"])
    rng = random.Random(seed)
    out = []
    for key, g in trials.groupby(list(COHORT), sort=True):
        ids = sorted(g["trial_id"])
        planned = {t: planned_samples(g.set_index("trial_id").loc[t].to_dict(), records[t]) for t in ids}
        sign = 1.0 if bool(scores.at[ids[0], "higher_is_better"]) else -1.0
        oriented = {t: sign * float(scores.at[t, "score"]) for t in ids}
        best = max(oriented.values())
        full = sum(records[t][-1]["tokens"] for t in ids)
        used_sum, rels = 0.0, []
        for _ in range(RANDOM_DRAWS):
            alive, used = list(ids), 0.0
            for fraction in rungs:
                keep = set(rng.sample(alive, keep_count(len(alive), eta)))
                for t in alive:
                    if t not in keep:
                        used += next(r["tokens"] for r in records[t] if r["samples"] >= rung_samples(fraction, planned[t]))
                alive = [t for t in alive if t in keep]
            used += sum(records[t][-1]["tokens"] for t in alive)
            used_sum += used
            rels.append(_rel(best - max(oriented[t] for t in alive), best))
        out.append({**dict(zip(COHORT, key)), "tokens_used": used_sum / RANDOM_DRAWS, "tokens_full": full,
                    "regret_rel": float(np.nanmean(rels)) if np.isfinite(rels).any() else math.nan,
                    "within": float(np.mean([_within(r) for r in rels]))})
    return out


def _summary(cohorts: list[dict[str, Any]]) -> dict[str, float]:
    used, full = sum(c["tokens_used"] for c in cohorts), sum(c["tokens_full"] for c in cohorts)
    rels = [c["regret_rel"] for c in cohorts if c["regret_rel"] == c["regret_rel"]]
    return {"token_fraction": used / full if full else math.nan,
            "mean_regret_rel": float(np.mean(rels)) if rels else math.nan,
            "within_1pct": float(np.mean([c["within"] for c in cohorts])) if cohorts else math.nan}


def _replays(tables: dict[str, pd.DataFrame], spec: dict[str, Any],
             rules: list[tuple[str, dict[str, Any]]]) -> tuple[pd.DataFrame, dict[int, list[dict[str, Any]]]]:
    """One row per setting (and the per-cohort outcomes behind it, by row index)."""
    trials = tables["trials"]
    replay = replay_stopping(tables["telemetry"], trials, tables["results"], spec, [r for _, r in rules])
    rows, per_cohort = [], {}
    for (label, rule), summary in zip(rules, replay.summary.to_dict("records")):
        mine = replay.cohorts[(replay.cohorts["rule"] == summary["rule"]) & replay.cohorts["replayable"]]
        cohorts = []
        for c in mine.to_dict("records"):
            rel = _rel(c["regret"], c["best_score"])
            cohorts.append({**{k: c[k] for k in COHORT}, "tokens_used": c["tokens_used"],
                            "tokens_full": c["tokens_full"], "regret_rel": rel, "within": float(_within(rel))})
        per_cohort[len(rows)] = cohorts
        rows.append({"rule": label, "mode": rule["mode"], "eta": rule["eta"], "rungs": str(rule["rungs"]),
                     "replayable": bool(summary["replayable"]), **_summary(cohorts), "spec": rule,
                     "reason": summary["reason"]})
    for eta in ETAS:
        for rungs in RUNG_SETS:
            cohorts = _random_promotion(tables, spec, rungs, eta)
            per_cohort[len(rows)] = cohorts
            rows.append({"rule": "random (same schedule)", "mode": "promote", "eta": eta, "rungs": str(rungs),
                         "replayable": True, **_summary(cohorts), "spec": None, "reason": ""})
    return pd.DataFrame(rows), per_cohort


def _choose(table: pd.DataFrame) -> int:
    """The setting to run: fewest tokens among those keeping the best within 1% in >= 90% of
    cohorts, else the highest keep rate (then fewest tokens)."""
    meets = table[table["within_1pct"] >= TARGET_KEPT]
    ranked = (meets.sort_values(["token_fraction", "mean_regret_rel"]) if len(meets) else
              table.sort_values(["within_1pct", "token_fraction"], ascending=[False, True]))
    return int(ranked.index[0])


def _held_out_choice(table: pd.DataFrame, per_cohort: dict[int, list[dict[str, Any]]]) -> dict[str, float]:
    """The choice made honestly: for each dataset, pick the setting on the *other* datasets'
    cohorts and score it on this one's; summed over datasets."""
    candidates = table[(table["mode"] == "promote") & table["spec"].notna() & table["replayable"]]
    datasets = sorted({c["dataset"] for cohorts in per_cohort.values() for c in cohorts})
    outcome = []
    for held in datasets:
        scored = candidates.assign(**{k: [_summary([c for c in per_cohort[i] if c["dataset"] != held])[k]
                                          for i in candidates.index]
                                      for k in ("token_fraction", "mean_regret_rel", "within_1pct")})
        chosen = _choose(scored)
        outcome += [c for c in per_cohort[chosen] if c["dataset"] == held]
    return _summary(outcome)


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
        rows.append({"regret_rel": _rel(regret, best)})
        same_scores += [abs(real_scores.at[t, "score"] - truth.at[t, "score"]) for t in kept]
    cohorts = pd.DataFrame(rows)
    tokens = real["trials"]["tokens"].sum() / _completed(ref)["tokens"].sum()  # the replays' denominator
    replay = replay_stopping(ref["telemetry"], ref["trials"], ref["results"], spec, [replayed])
    replay_kept = set(replay.trials.query("not stopped")["trial_id"])
    real_kept = set(real["trials"].query("status == 'completed'")["trial_id"])
    return {"token_fraction": float(tokens), "mean_regret_rel": float(cohorts["regret_rel"].mean()),
            "within_1pct": float(cohorts["regret_rel"].map(_within).mean()), "wall_s": wall_s,
            "replay_token_fraction": float(replay.summary.iloc[0]["token_fraction"]),
            "kept_same_as_replay": replay_kept == real_kept, "kept_real": len(real_kept), "kept_replay": len(replay_kept),
            "max_final_score_diff_vs_reference": float(max(same_scores, default=0.0))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/out/efficiency", help="folder for the stores and the JSON")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the reference store of an earlier run (its wall time is then the resume's)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    fractions = sorted({f for rungs in RUNG_SETS for f in rungs})
    print("base model:", ensure_demo_base(), flush=True)

    ref_dir = out / "reference"
    if not args.reuse:
        shutil.rmtree(ref_dir, ignore_errors=True)
    print("[1/3] reference: the demo grid with stopping: none", flush=True)
    ref_wall, counts = _run(_study(ref_dir, {"rule": "none"}, fractions))
    print(f"    {counts} in {ref_wall:.0f}s", flush=True)
    ref, spec = _tables(ref_dir / "demo.db")
    suggested = suggest_signals(signal_directions(dynamics_correlations(
        ref["telemetry"], ref["trials"], ref["results"], spec, n_boot=1000)))

    print(f"[2/3] replays on the reference curves (suggested signals, in-sample: {suggested})", flush=True)
    table, per_cohort = _replays(ref, spec, _rules(suggested))
    shown = table.drop(columns=["spec", "reason"])
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(shown.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    for r in table[~table["replayable"]].itertuples():
        print(f"    not replayable: {r.rule} {r.mode} eta={r.eta} rungs={r.rungs}: {r.reason}")

    promote = table[(table["mode"] == "promote") & table["spec"].notna() & table["replayable"]]
    best = table.loc[_choose(promote)]
    held_out = _held_out_choice(table, per_cohort)
    print(f"    chosen in-sample among {len(promote)} promote settings: {best['rule']} eta={best['eta']} "
          f"rungs={best['rungs']}; chosen leave-one-dataset-out instead: token_fraction "
          f"{held_out['token_fraction']:.3f}, mean_regret_rel {held_out['mean_regret_rel']:.3f}, "
          f"within_1pct {held_out['within_1pct']:.3f}")
    same = table[(table["mode"] == "promote") & (table["eta"] == best["eta"]) & (table["rungs"] == best["rungs"])]
    beats_asha = True
    for r in same[same["rule"].str.startswith(("asha", "random"))].itertuples():
        print(f"    at equal compute ({r.token_fraction:.3f} of the tokens), {r.rule}: mean regret "
              f"{r.mean_regret_rel:.3f}, within 1% {r.within_1pct:.3f}")
        if r.rule.startswith("asha"):
            beats_asha &= best["mean_regret_rel"] < r.mean_regret_rel
    print(f"[3/3] the chosen setting for real: {best['rule']} eta={best['eta']} rungs={best['rungs']}", flush=True)
    real_dir = out / "real"
    shutil.rmtree(real_dir, ignore_errors=True)
    real_wall, counts = _run(_study(real_dir, dict(best["spec"]), fractions))
    print(f"    {counts} in {real_wall:.0f}s", flush=True)
    real = _real_vs_replay(real_dir / "demo.db", ref, spec, dict(best["spec"]), real_wall)
    print("    real run:   " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in real.items()))
    replayed = best.to_dict()
    print(f"    its replay: token_fraction {replayed['token_fraction']:.3f}, mean_regret_rel "
          f"{replayed['mean_regret_rel']:.3f}, within_1pct {replayed['within_1pct']:.3f}")
    met = replayed["token_fraction"] <= TARGET_TOKENS and replayed["within_1pct"] >= TARGET_KEPT
    print(f"target (<= {TARGET_TOKENS:.0%} of the grid's tokens, best within 1% in >= {TARGET_KEPT:.0%} of cohorts, "
          f"better regret than ASHA at equal compute): {'met' if met and beats_asha else 'NOT met'} by the "
          f"in-sample choice's replay (tokens {replayed['token_fraction']:.1%}, within 1% "
          f"{replayed['within_1pct']:.0%}, beats ASHA: {beats_asha}); real run {real['token_fraction']:.1%} tokens, "
          f"{real['within_1pct']:.0%} within 1%; held-out choice {held_out['token_fraction']:.1%} tokens, "
          f"{held_out['within_1pct']:.0%} within 1%")
    doc = {"reference_wall_s": ref_wall, "suggested_signals": suggested,
           "replays": json.loads(shown.to_json(orient="records")), "best": {k: replayed[k] for k in (
               "rule", "mode", "eta", "rungs", "token_fraction", "mean_regret_rel", "within_1pct")},
           "held_out_choice": held_out, "beats_asha_at_equal_compute": bool(beats_asha),
           "real": real, "target_met_by_replay": bool(met and beats_asha)}
    (out / "efficiency.json").write_text(json.dumps(doc, indent=2, default=str))
    print(out / "efficiency.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
