"""Sections that show the study itself: summary, learning curves, batch × LR grid, stacked vs phased."""

from __future__ import annotations

import pandas as pd

from tunescout.analysis import batch_lr_table, rule_label, stacked_vs_phased
from tunescout.report import figures
from tunescout.report.blocks import Block, Section, StudyData, Table, fmt, is_missing, short_model
from tunescout.study.keys import COHORT, dataset_metric
from tunescout.status import STATUSES

__all__ = ["curves_section", "heatmap_section", "phases_section", "summary_section"]

DEMO_NOTE = ("This is the embedded demo: a miniature of a real study (a tiny model pretrained locally and small "
             "generated datasets, minutes of CPU, where a real study tunes 1B–8B models on real data). Its numbers "
             "show what the report contains; they are not evidence for or against the studies' findings.")


def _duration(seconds: float) -> str:
    if pd.isna(seconds):
        return "n/a"
    s = int(round(seconds))
    return f"{s // 3600}h {s % 3600 // 60:02d}m {s % 60:02d}s" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


def _grid_text(grid: dict) -> str:
    return "; ".join(f"{k}: {', '.join(fmt(v) for v in vals)}" for k, vals in grid.items()) or "none"


def summary_section(d: StudyData) -> Section:
    """What the study ran (spec, trials by status) and what it cost (tokens, time)."""
    sec = Section("summary", "Summary", f"What study {d.name!r} ran, how far it got and what it cost.")
    if d.name.startswith("demo"):
        sec.blocks.append(Block("callout", text=DEMO_NOTE))
    spec, trials = d.spec, d.trials
    planned = trials["planned_tokens"] if "planned_tokens" in trials else pd.Series(dtype=float)
    planned_total, unplanned = planned.sum(skipna=True), int(planned.isna().sum())
    fraction = d.tokens_trained / planned_total if planned_total else float("nan")
    datasets = [f"{x['name']} ({dataset_metric(x)})" for x in spec.get("datasets", [])]
    stopping = spec.get("stopping") or {"rule": "none"}
    facts = [
        ("study", d.name),
        ("models", ", ".join(short_model(m) for m in spec.get("models", [])) or "n/a"),
        ("datasets (metric)", ", ".join(datasets) or "n/a"),
        ("methods", ", ".join(spec.get("methods", [])) or "n/a"),
        ("grid", _grid_text(spec.get("grid") or {})),
        ("seeds", ", ".join(str(s) for s in spec.get("seeds", [0]))),
        ("stopping rule", rule_label(stopping)),
        ("trials", f"{len(trials)}" + (f" ({d.superseded} more of earlier spec versions left out; "
                                       "`tunescout status --all-versions` lists them)" if d.superseded else "")),
        ("tokens trained", f"{d.tokens_trained:,}"),
        ("planned tokens, full grid", f"{planned_total:,.0f}" + (f" ({unplanned} trials without a plan)"
                                                                 if unplanned else "")),
        ("compute used", "n/a (no planned tokens)" if pd.isna(fraction) else f"{fraction:.1%} of the full grid"),
        ("study wall time (all versions)", _duration(d.elapsed_s)),
        ("trial time (sum over trials)", _duration(trials["wall_s"].sum() if "wall_s" in trials else 0.0)),
    ]
    sec.blocks.append(Block("facts", table=Table(["", ""], [[k, v] for k, v in facts])))
    counts = pd.DataFrame({"status": list(STATUSES), "trials": [d.counts.get(s, 0) for s in STATUSES]})
    sec.table(Table.of(counts, {"status": "status", "trials": ("trials", "d")}, caption="trials by status"))
    sec.chart(figures.status_bar(counts[counts["trials"] > 0]), "summary")
    return sec


def _trial_info(d: StudyData) -> pd.DataFrame:
    """Per trial: cohort, status, learning rate, batch size, a legend label and the hover text."""
    info = d.trials[["trial_id", *COHORT, "status"]].copy()
    info["learning_rate"] = pd.to_numeric(d.axis("learning_rate"), errors="coerce")
    info["batch_size"] = d.axis("batch_size")
    others = [c for c in d.trials.columns if c.startswith("hp.") and c not in ("hp.learning_rate", "hp.batch_size")]
    info["label"] = [" · ".join([f"lr {fmt(lr)}", f"bs {fmt(bs)}",
                                 *(f"{c[3:]}={fmt(row[c])}" for c in others if not is_missing(row[c]))])
                     for lr, bs, row in zip(info["learning_rate"], info["batch_size"], d.trials.to_dict("records"))]
    info["hover"] = info["trial_id"].map(d.hover())
    return info


def curves_section(d: StudyData) -> Section:
    """Loss and gradient-norm curves per cohort, one line per trial."""
    sec = Section("curves", "Learning curves",
                  "Training loss and gradient norm against samples seen, one line per trial, per cohort "
                  "(model · dataset · method). Colour = learning rate, dash = batch size; "
                  "an x marks where a stopped trial ended. Hover a line for its trial and config.")
    if d.telemetry.empty:
        sec.note("No telemetry yet: no trial of this study has trained a step.")
        return sec
    info = _trial_info(d)
    curves = d.telemetry[["trial_id", "samples", "loss", "grad_norm"]].merge(info, on="trial_id")
    colors = figures.lr_colors(info["learning_rate"])
    silent = int((~info["trial_id"].isin(d.telemetry["trial_id"])).sum())
    if silent:
        sec.note(f"{silent} trial(s) have no telemetry yet (pending, or failed before a step) and are not drawn.")
    for key, cohort in curves.groupby(list(COHORT), sort=True):
        model, dataset, method = key
        n = cohort["trial_id"].nunique()
        title = f"{short_model(model)} · {dataset} · {method} — {n} trial{'s' if n != 1 else ''}"
        sec.chart(figures.learning_curves(cohort, title, colors), "curves")
    return sec


def heatmap_section(d: StudyData) -> Section:
    """Final scores on the batch size × learning rate grid, per dataset and relative across datasets."""
    sec = Section("heatmap", "Batch size × learning rate",
                  "Final scores of completed trials on the batch-size × learning-rate grid, per dataset, and the "
                  "mean over datasets of each cell's score relative to that dataset's best cell (1 = best "
                  "everywhere). The SFT recipe found large batches with low learning rates score best.")
    try:
        tables = batch_lr_table(d.trials, d.results, d.spec)
    except ValueError as exc:
        sec.note(f"No batch × learning-rate grid: {exc}.")
        return sec
    long = tables.long
    if long.empty or long["score"].notna().sum() == 0:
        sec.note("No completed trial has a final score yet, so the grid is empty "
                 "(stopped trials are left out: their score is that of a shorter run).")
        return sec
    # every panel on the same axes: a grid point where no trial completed stays as an empty cell
    batches, lrs = sorted(long["batch_size"].unique()), sorted(long["learning_rate"].unique())

    def same_axes(table: pd.DataFrame) -> pd.DataFrame:
        return table.reindex(index=batches, columns=lrs)

    for (model, method), relative in tables.relative.items():
        panels = []
        for (m, me, dataset), scores in tables.scores.items():
            if (m, me) != (model, method):
                continue
            cells = long[(long["model"] == m) & (long["method"] == me) & (long["dataset"] == dataset)]
            counts = cells.pivot(index="batch_size", columns="learning_rate", values="n_trials")
            panels.append((f"{dataset} ({cells['metric'].iloc[0]})", same_axes(scores), same_axes(counts),
                           bool(cells["higher_is_better"].iloc[0])))
        panels.append(("mean relative across datasets", same_axes(relative), None, True))
        fig = figures.batch_lr_heatmaps(panels, f"{short_model(model)} · {method}")
        sec.chart(fig, "heatmap")
    sec.note("Empty cells: no completed trial with a score there, or (relative panel) a ratio without meaning "
             "because the dataset's best score is not positive.")
    return sec


def _pair_label(row: dict, columns: list[str] | tuple[str, ...]) -> str:
    parts = [short_model(row[c]) if c == "model" else str(row[c]) for c in columns]
    return " · ".join([*parts, row["config"] or "default"])


def phases_section(d: StudyData) -> Section:
    """Stacked vs phased pairs: final score, peak and samples to peak."""
    sec = Section("phases", "Stacked vs phased",
                  "Trials that differ only in `strategy`: final score and samples to peak (sample efficiency). "
                  "The SFT recipe found stacked training matches phased and peaks with fewer samples.")
    pairs = stacked_vs_phased(d.trials, d.results, d.spec)
    if pairs.empty:
        reason = pairs.attrs.get("reason", "")
        if "no `strategy` axis" in reason:
            sec.note("This study has no strategy axis; to compare, add `strategy: [stacked, phased]` to its grid.")
        else:
            sec.note(f"Nothing to compare: {reason or 'no completed stacked/phased pair of trials yet'}.")
        return sec
    # the chart's labels name only what varies between pairs; the table names everything
    varying = [c for c in ("model", "method", "dataset", "seed") if pairs[c].nunique() > 1]
    rows = pairs.to_dict("records")
    pairs = pairs.assign(pair=[_pair_label(r, ("model", "method", "dataset")) for r in rows],
                         label=[_pair_label(r, varying) for r in rows])
    sec.chart(figures.stacked_phased_bars(pairs), "phases")
    sec.table(Table.of(pairs, {
        "pair": "pair (model · method · dataset · config)", "seed": ("seed", "d"), "metric": "metric",
        "score_stacked": ("score stacked", ".4g"), "score_phased": ("score phased", ".4g"),
        "peak_stacked": ("peak stacked", ".4g"), "peak_phased": ("peak phased", ".4g"),
        "samples_to_peak_stacked": ("samples to peak stacked", ",.0f"),
        "samples_to_peak_phased": ("samples to peak phased", ",.0f")}))
    return sec
