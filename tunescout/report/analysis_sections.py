"""Sections built on ``tunescout.analysis``: CBS ranking, early dynamics, recommendations."""

from __future__ import annotations

import logging

import pandas as pd
import yaml

from tunescout.analysis import (
    dynamics_correlations, early_signals, final_scores, leave_one_out, loo_summary, promotion_agreement,
    rank_results, replay_stopping, signal_directions, signals_advice, split_groups, suggest_signals,
)
from tunescout.settings import nest_dotted
from tunescout.presets import load_presets
from tunescout.report import figures
from tunescout.report.blocks import Block, Section, StudyData, Table, fmt, fmt_rho, short_model
from tunescout.study.keys import COHORT

__all__ = ["cbs_section", "dynamics_section", "recommend_section"]

log = logging.getLogger("tunescout.report")


def _group_title(key: tuple) -> str:
    model, method = key
    return f"{short_model(model)} · {method}"


def rank_groups(scores: pd.DataFrame, tau: float) -> tuple[dict[tuple, pd.DataFrame | str], str]:
    """The CBS ranking of each (model, method) group, or why it could not be ranked; and why
    nothing was ranked at all ('' when some group was). Computed once with the study data, read
    by the CBS section and the recommendations."""
    if scores.empty:
        return {}, "no finished trial has a score yet"
    out: dict[tuple, pd.DataFrame | str] = {}
    for key, part in split_groups(scores).items():
        try:  # one group at a time: a group with no scores at all must not hide the others
            ranking = next(iter(rank_results(part, tau=tau).values()))
        except ValueError as exc:
            out[key] = f"Cannot rank this group: {exc}."
            continue
        out[key] = "No configuration to rank in this group." if ranking.empty else ranking
    ranked = any(isinstance(r, pd.DataFrame) for r in out.values())
    return out, "" if ranked else "no group could be ranked"


def _ranked(d: StudyData) -> dict[tuple, pd.DataFrame]:
    return {key: r for key, r in d.rankings.items() if isinstance(r, pd.DataFrame)}


def cbs_section(d: StudyData) -> Section:
    """CBS ranking and coverage curve per model × method, then the held-out top-k validation."""
    sec = Section("cbs", "Coverage-based Search ranking",
                  f"Configurations ordered so the top-k together come close to the best on most datasets: a config "
                  f"covers a dataset at relative score ≥ τ = {d.tau:g}. Per model × method.")
    if d.scores.empty:
        sec.note("No finished trial has a score yet: nothing to rank.")
        return sec
    for key, ranking in d.rankings.items():
        sec.heading(_group_title(key))
        if isinstance(ranking, str):
            sec.note(ranking)
            continue
        ranking = ranking.assign(newly=ranking["newly_covered"].map(lambda x: ", ".join(x) or "—"))
        sec.table(Table.of(ranking, {
            "rank": ("rank", "d"), "config_id": "config", "newly": "newly covered",
            "cumulative_coverage": ("cumulative coverage", ".0%"), "mean_best_relative": ("mean best relative", ".3f"),
            "mean_relative": ("own mean relative", ".3f")}, scroll=len(ranking) > 12))
        sec.chart(figures.coverage_curve(ranking, f"coverage curve — {_group_title(key)}", d.tau),
                  "cbs")
    _heldout(sec, d)
    return sec


def _heldout(sec: Section, d: StudyData) -> None:
    sec.heading("Held-out datasets: top-k vs baselines")
    sec.note("Leave one dataset out, rank on the rest, and score each method's top-k on the held-out one "
             "(best relative score among the k; 1 = as good as the whole grid). Baselines: best on average, "
             "the multiple-defaults portfolio and k random configurations (exact expectation).")
    # A study of one dataset per group (every `tune` store) has nothing to hold out: the note below
    # says so in the page, without the warning leave_one_out logs for each group it skips.
    several = not d.scores.empty and any(part["dataset"].nunique() > 1 for part in split_groups(d.scores).values())
    try:
        detail = leave_one_out(d.scores, tau=d.tau) if several else pd.DataFrame()
    except ValueError as exc:
        sec.note(f"Held-out validation could not run: {exc}.")
        return
    if detail.empty:
        sec.note("Held-out validation needs at least two scored datasets in a model × method group; "
                 "this study has fewer.")
        return
    summary = loo_summary(detail)
    for key, part in summary.groupby(["model", "method"], sort=True):
        title = _group_title(key)
        wide = part.pivot(index="method_name", columns="k", values="mean_best_relative")
        wide = wide.reindex(part["method_name"].drop_duplicates())
        columns = {"method_name": "method", **{k: (f"top-{k}", ".3f") for k in wide.columns}}
        n = int(part["n_heldout"].max())
        sec.table(Table.of(wide.reset_index(), columns, caption=f"{title}: mean over {n} held-out datasets"))
        sec.chart(figures.loo_bars(part, f"held-out top-k — {title}"), "loo")


def _points(d: StudyData) -> pd.DataFrame:
    signals = early_signals(d.telemetry, d.trials, d.window)
    scores = final_scores(d.trials, d.results, d.spec)[["trial_id", "metric", "higher_is_better", "score"]]
    points = signals.merge(scores, on="trial_id")
    return points.assign(hover=points["trial_id"].map(d.hover()))


def _rho_text(row: dict | None, signal: str) -> str:
    """A ``dynamics_correlations`` row's rho for one signal with its CI, or ``n/a (n=..)``."""
    if row is None:
        return "n/a (n=0)"
    return fmt_rho(row[f"rho_{signal}_better"], row[f"{signal}_ci_lo"], row[f"{signal}_ci_hi"], int(row["n"]))


def dynamics_section(d: StudyData) -> Section:
    """Early-window signals against final scores per cohort, and stopping rules replayed."""
    sec = Section("dynamics", "Early dynamics",
                  f"Did the early window (first {d.window:.0%} of each trial's planned samples) predict the final "
                  f"score? Spearman ρ within each cohort, oriented so ρ > 0 means the recipe's claim held "
                  f"(lower gradient norm, higher loss → better); 95% bootstrap CI; completed trials only.")
    if d.telemetry.empty:
        sec.note("No telemetry yet: there is no early window to analyse.")
    else:
        corr = dynamics_correlations(d.telemetry, d.trials, d.results, d.spec, window=d.window)
        corr = corr.assign(
            cohort=[("all cohorts (pooled)" if r.level == "pooled" else
                     f"{short_model(r.model)} · {r.dataset} · {r.method}") for r in corr.itertuples()],
            lowgrad=[_rho_text(r, "lowgrad") for r in corr.to_dict("records")],
            highloss=[_rho_text(r, "highloss") for r in corr.to_dict("records")])
        sec.table(Table.of(corr, {"cohort": "cohort", "metric": "metric", "n": ("trials", "d"),
                                  "lowgrad": "lower grad norm → better: ρ [CI]",
                                  "highloss": "higher loss → better: ρ [CI]"},
                           caption="n/a: fewer than 3 completed trials with a score, or a constant signal or score"))
        if corr.attrs.get("note"):
            sec.note(corr.attrs["note"])
        sec.note(signals_advice(suggest_signals(signal_directions(corr))))
        points = _points(d)
        cohort_rows = {tuple(r[c] for c in COHORT): r for r in corr[corr["level"] == "cohort"].to_dict("records")}
        for key, part in points.groupby(list(COHORT), sort=True):
            usable = part[part["score"].notna() & (part["grad_norm"].notna() | part["loss"].notna())]
            title = f"{short_model(key[0])} · {key[1]} · {key[2]}"
            if usable.empty:
                sec.note(f"{title}: no trial has both an early-window signal and a final score.")
                continue
            row = cohort_rows.get(key)
            panels = (f"lower grad norm → better: ρ = {_rho_text(row, 'lowgrad')}",
                      f"higher loss → better: ρ = {_rho_text(row, 'highloss')}")
            fig = figures.early_signal_scatter(usable, title, panels, str(usable["metric"].iloc[0]),
                                               bool(usable["higher_is_better"].iloc[0]))
            sec.chart(fig, "dynamics")
    _promotion(sec, d)
    _replay(sec, d)
    return sec


def _promotion(sec: Section, d: StudyData) -> None:
    """In promote mode: did each rung's ranking agree with the final scores of the trials it kept?"""
    agreement = promotion_agreement(d.decisions, d.trials, d.results, d.spec)
    if agreement.empty:
        return
    sec.heading("Promotion: the rung's ranking against the final one")
    sec.note("Every trial trained to the first rung, so its early signals are known; the kept ones ran on. "
             "ρ compares the rung's ranking with the final scores of the kept trials that finished "
             "(+1: the same order).")
    agreement = agreement.assign(cohort=[f"{short_model(r.model)} · {r.dataset} · {r.method}"
                                         for r in agreement.itertuples()])
    sec.table(Table.of(agreement, {"cohort": "cohort", "rung": ("rung", "d"), "n_ranked": ("ranked", "d"),
                                   "n_kept": ("kept", "d"), "n_finished": ("finished", "d"), "rho": ("ρ", ".2f"),
                                   "top_kept_is_best": "rung's first is the best"},
                       caption="ρ n/a: fewer than 3 kept trials finished"))


def _replay(sec: Section, d: StudyData) -> None:
    sec.heading("Stopping rules replayed")
    sec.note("Each rule is fed the completed trials' records in order, through the same decision the sweep "
             "uses: compute it would have used (fraction of those trials' tokens) and its regret (best kept vs "
             "best final score, relative).")
    replay = replay_stopping(d.telemetry, d.trials, d.results, d.spec)
    summary = replay.summary
    if summary.attrs.get("note"):
        sec.note(summary.attrs["note"])
    done, skipped = summary[summary["replayable"]], summary[~summary["replayable"]]
    if done.empty:
        sec.note("No rule could be replayed on this study (see the reasons below).")
    else:
        sec.chart(figures.replay_scatter(done), "replay")
        sec.table(Table.of(done, {
            "rule": "rule", "n_replayed": ("cohorts", "d"), "n_stopped": ("trials stopped", "d"),
            "n_trials": ("of trials", "d"), "token_fraction": ("compute used", ".1%"),
            "compute_saved": ("compute saved", ".1%"), "mean_regret_rel": ("mean regret", ".2%"),
            "max_regret_rel": ("max regret", ".2%"), "best_kept_rate": ("best kept", ".0%")},
            caption="replayable rules", scroll=len(done) > 12))
    if not skipped.empty:
        sec.table(Table.of(skipped, {"rule": "rule", "reason": "why it cannot be replayed"},
                           caption="rules that could not be replayed", scroll=len(skipped) > 12))


def _presets_for(model: str, method: str) -> tuple[list, bool]:
    """Shipped presets for a model's family (matched in its name) and method; else the method's."""
    presets = [p for p in load_presets() if p.method == method]
    named = [p for p in presets if any(f in str(model).lower() for f in p.families)]
    return (named, True) if named else (presets, False)


def recommend_section(d: StudyData) -> Section:
    """The top configurations of each CBS ranking as train-config YAML, next to the shipped presets."""
    sec = Section("recommend", "Recommended configurations",
                  f"The top {d.top} configurations of each CBS ranking, as YAML to paste into a train config "
                  f"(add `model` and `data`), and the shipped presets for the same model family and method.")
    if not _ranked(d):
        sec.note(f"No ranking to recommend from ({d.rank_error or 'nothing ranked'}); "
                 f"`tunescout recommend --model-family NAME` lists the shipped presets.")
        return sec
    if d.spec.get("fixed"):
        sec.blocks.append(Block("code", title="the study's fixed settings: every configuration below used them too",
                                text=yaml.safe_dump(d.spec["fixed"], sort_keys=False)))
    for (model, method), ranking in _ranked(d).items():
        sec.heading(_group_title((model, method)))
        part = d.scores[(d.scores["model"] == model) & (d.scores["method"] == method)]
        for row in ranking.head(d.top).itertuples():
            # the hyperparameters of one of the config's trials, exactly as the store has them
            trial = part.loc[part["config_id"] == row.config_id, "trial_ids"].iloc[0].split(",")[0]
            config = {"method": method, **nest_dotted(d.hparams[trial])}
            title = (f"rank {row.rank}: {row.config_id} — the top {row.rank} cover "
                     f"{fmt(row.cumulative_coverage, '.0%')} of datasets "
                     f"(mean best relative {fmt(row.mean_best_relative, '.3f')})")
            sec.blocks.append(Block("code", title=title, text=yaml.safe_dump(config, sort_keys=False)))
        presets, matched = _presets_for(model, method)
        if not presets:
            sec.note(f"No shipped preset for method {method!r}.")
            continue
        sec.note(f"Shipped presets for this model's family and {method}:" if matched else
                 f"No shipped preset names this model's family; the {method} presets, for reference:")
        for p in presets:
            sec.blocks.append(Block("code", title=f"preset {p.name}: {p.provenance}",
                                    text=yaml.safe_dump({"method": p.method, **p.config}, sort_keys=False)))
    return sec
