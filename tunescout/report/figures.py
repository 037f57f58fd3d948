"""The report's charts: one function per chart, a DataFrame in, a plotly ``Figure`` out.

No function here computes a statistic: every value plotted is a column of the frame it is given
(study tables or the results of ``tunescout.analysis``). What is done here is layout: colours,
dashes, hover text and titles.

Hover text is passed as data (``text``/``customdata``) and referenced from the hover template,
so a hyperparameter value can never be read by plotly as template syntax.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

__all__ = [
    "batch_lr_heatmaps", "coverage_curve", "early_signal_scatter", "figure_html", "learning_curves", "loo_bars",
    "lr_colors", "replay_scatter", "stacked_phased_bars", "status_bar",
]

# A small template of our own: plotly's default one is ~5 kB of JSON repeated in every figure.
TEMPLATE = go.layout.Template(layout=go.Layout(
    font={"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 12, "color": "#1f2937"},
    paper_bgcolor="white", plot_bgcolor="white", hovermode="closest",
    hoverlabel={"align": "left", "bgcolor": "white", "font": {"size": 12}},
    colorway=["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#db2777", "#65a30d"],
    xaxis={"gridcolor": "#e5e7eb", "linecolor": "#9ca3af", "zerolinecolor": "#d1d5db", "automargin": True},
    yaxis={"gridcolor": "#e5e7eb", "linecolor": "#9ca3af", "zerolinecolor": "#d1d5db", "automargin": True},
    margin={"l": 60, "r": 20, "t": 60, "b": 50}, title={"x": 0.01, "font": {"size": 14}},
    legend={"font": {"size": 11}},
))
STATUS_COLORS = {"pending": "#9ca3af", "running": "#0891b2", "completed": "#16a34a", "stopped": "#ea580c",
                 "diverged": "#dc2626", "failed": "#7f1d1d"}
END_SYMBOLS = {"stopped": "x", "diverged": "circle-x", "failed": "square-x"}
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
METHOD_COLORS = {"cbs": "#2563eb", "best_on_average": "#9333ea", "multiple_defaults": "#0891b2",
                 "random": "#9ca3af", "preset": "#ea580c"}
HEATMAPS_PER_ROW = 4
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["select2d", "lasso2d"]}


def figure_html(fig: go.Figure, div_id: str) -> str:
    """The figure as a ``<div>`` and the script that draws it, without plotly.js (the page
    inlines it once)."""
    height = fig.layout.height or 420
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG,
                       default_height=f"{height}px", default_width="100%")


def _layout(fig: go.Figure, title: str, height: int, **extra) -> go.Figure:
    fig.update_layout(template=TEMPLATE, title={"text": title}, height=height, **extra)
    return fig


def lr_colors(values: Sequence[float]) -> dict[float, str]:
    """One colour per learning rate, dark (low) to warm (high), the same in every chart."""
    levels = sorted({float(v) for v in values if v is not None and not _nan(v)})
    if not levels:
        return {}
    points = [0.0] if len(levels) == 1 else [0.85 * i / (len(levels) - 1) for i in range(len(levels))]
    return dict(zip(levels, sample_colorscale("Plasma", points)))


def _nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _dash_of(values: Sequence[object]) -> dict[object, str]:
    levels = sorted({v for v in values if v is not None and not _nan(v)}, key=lambda v: (str(type(v)), v))
    return {v: DASHES[i % len(DASHES)] for i, v in enumerate(levels)}


def learning_curves(curves: pd.DataFrame, title: str, colors: Mapping[float, str] | None = None) -> go.Figure:
    """Loss and gradient norm against samples seen, one line per trial.

    Args:
        curves: one row per telemetry record of one cohort: ``trial_id, samples, loss, grad_norm,
            learning_rate, batch_size, status, label`` (legend text) and ``hover`` (the trial's
            config as HTML-escaped text).
        title: the cohort.
        colors: learning rate → colour (:func:`lr_colors`), so every cohort uses the same key.

    Returns:
        Two panels side by side; lines coloured by learning rate, dashed by batch size; a trial
        that did not complete ends in a marker (x = stopped) at its last record.
    """
    colors = colors or lr_colors(curves["learning_rate"])
    dashes = _dash_of(curves["batch_size"])
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "gradient norm"), horizontal_spacing=0.08)
    order = curves.drop_duplicates("trial_id").sort_values(["learning_rate", "batch_size", "trial_id"])
    for trial in order.itertuples():
        rows = curves[curves["trial_id"] == trial.trial_id].sort_values("samples")
        color = colors.get(float(trial.learning_rate), "#6b7280") if not _nan(trial.learning_rate) else "#6b7280"
        line = {"color": color, "dash": dashes.get(trial.batch_size, "solid"), "width": 1.8}
        for col, (signal, name) in enumerate((("loss", "loss"), ("grad_norm", "grad norm")), start=1):
            fig.add_trace(go.Scatter(
                x=rows["samples"], y=rows[signal], mode="lines", line=line, name=trial.label,
                legendgroup=trial.trial_id, showlegend=col == 1, text=rows["hover"],
                hovertemplate=f"%{{text}}<br>samples %{{x}}<br>{name} %{{y:.4g}}<extra></extra>"), row=1, col=col)
            symbol = END_SYMBOLS.get(trial.status)
            if symbol and len(rows):
                end = rows.tail(1)
                fig.add_trace(go.Scatter(
                    x=end["samples"], y=end[signal], mode="markers", legendgroup=trial.trial_id, showlegend=False,
                    marker={"symbol": symbol, "size": 11, "color": color, "line": {"width": 2, "color": color}},
                    text=end["hover"], name=f"{trial.status} here",
                    hovertemplate=f"%{{text}}<br><b>{trial.status} at</b> %{{x}} samples<extra></extra>"),
                    row=1, col=col)
    fig.update_xaxes(title_text="samples seen")
    return _layout(fig, title, 400, legend={"title": {"text": "lr · batch"}, "font": {"size": 10}})


def status_bar(counts: pd.DataFrame) -> go.Figure:
    """Trials per status (``status``, ``trials``)."""
    fig = go.Figure(go.Bar(x=counts["status"], y=counts["trials"], text=counts["trials"], textposition="outside",
                           marker_color=[STATUS_COLORS.get(s, "#6b7280") for s in counts["status"]],
                           hovertemplate="%{x}: %{y} trials<extra></extra>"))
    top = max(1, int(counts["trials"].max())) if len(counts) else 1
    fig.update_yaxes(title_text="trials", range=[0, top * 1.2])
    return _layout(fig, "trials by status", 300, showlegend=False)


def _cat(values: Sequence[object]) -> list[str]:
    return [f"{v:g}" if isinstance(v, float) else str(v) for v in values]


def batch_lr_heatmaps(panels: Sequence[tuple[str, pd.DataFrame, pd.DataFrame | None, bool]],
                      title: str) -> go.Figure:
    """Batch size × learning rate heatmaps side by side, at most four to a row.

    Args:
        panels: ``(panel title, values, trials, higher_is_better)``: ``values`` a ``batch_size`` ×
            ``learning_rate`` table (``BatchLrTables.scores`` or ``.relative``), ``trials`` the same
            layout counting the trials in each cell (None: not shown). The colour scale is
            reversed for lower-is-better values, so bright always means better.
        title: the figure's title (model and method).
    """
    cols = min(len(panels), HEATMAPS_PER_ROW)
    rows = -(-len(panels) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p[0] for p in panels], horizontal_spacing=0.06,
                        vertical_spacing=0.5 / rows)
    for i, (_, values, counts, higher) in enumerate(panels):
        row, col = i // cols + 1, i % cols + 1
        z = values.astype(float)
        text = [[("" if _nan(v) else f"{v:.3g}") for v in row] for row in z.to_numpy().tolist()]
        n = (counts.reindex(index=z.index, columns=z.columns).fillna(0).astype(int).to_numpy().tolist()
             if counts is not None else [[None] * z.shape[1] for _ in range(z.shape[0])])
        fig.add_trace(go.Heatmap(
            z=z.to_numpy().tolist(), x=_cat(z.columns), y=_cat(z.index), text=text, texttemplate="%{text}",
            customdata=n, colorscale="Viridis", reversescale=not higher, showscale=False, xgap=2, ygap=2,
            hovertemplate=("batch %{y}, lr %{x}<br>value %{z:.4g}"
                           + ("<br>trials %{customdata}" if counts is not None else "") + "<extra></extra>")),
            row=row, col=col)
        fig.update_xaxes(type="category", title_text="learning rate", row=row, col=col)
        fig.update_yaxes(type="category", row=row, col=col, title_text="batch size" if col == 1 else None)
    return _layout(fig, title, 60 + 290 * rows, showlegend=False)


def coverage_curve(ranking: pd.DataFrame, title: str, tau: float) -> go.Figure:
    """Cumulative coverage and mean best-of-top-k relative score against k (a CBS ranking:
    ``rank, config_id, cumulative_coverage, mean_best_relative, newly``)."""
    fig = go.Figure()
    for column, name, color in (("cumulative_coverage", f"coverage (rel ≥ {tau:g})", "#2563eb"),
                                ("mean_best_relative", "mean best relative", "#16a34a")):
        fig.add_trace(go.Scatter(
            x=ranking["rank"], y=ranking[column], mode="lines+markers", name=name, line={"color": color},
            customdata=ranking[["config_id", "newly"]].to_numpy().tolist(),
            hovertemplate=("top-%{x}: " + name + " %{y:.3f}<br>adds %{customdata[0]}"
                           "<br>newly covered: %{customdata[1]}<extra></extra>")))
    fig.update_xaxes(title_text="k (top-k configurations)", dtick=1 if len(ranking) <= 20 else None)
    fig.update_yaxes(title_text="fraction", range=[0, 1.05])
    return _layout(fig, title, 340, legend={"orientation": "h", "y": -0.25})


def loo_bars(summary: pd.DataFrame, title: str) -> go.Figure:
    """Held-out best relative score of each method's top-k (``loo_summary``: ``method_name, k,
    mean_best_relative, n_heldout``), grouped by k."""
    fig = go.Figure()
    for method, part in summary.groupby("method_name", sort=False):
        fig.add_trace(go.Bar(
            x=[f"top-{k}" for k in part["k"]], y=part["mean_best_relative"], name=str(method),
            marker_color=METHOD_COLORS.get(str(method)), customdata=part["n_heldout"],
            hovertemplate=f"{method} %{{x}}: %{{y:.3f}}<br>mean over %{{customdata}} held-out<extra></extra>"))
    fig.update_yaxes(title_text="best relative score on held-out", range=[0, 1.05])
    return _layout(fig, title, 340, barmode="group", legend={"orientation": "h", "y": -0.2})


def early_signal_scatter(points: pd.DataFrame, title: str, panel_titles: tuple[str, str],
                         metric: str, higher_is_better: bool = True) -> go.Figure:
    """Early-window mean gradient norm and mean loss against the final score, one point per trial.

    Args:
        points: one row per trial of a cohort: ``grad_norm, loss, score, status, hover``.
        title: the cohort.
        panel_titles: the two panels' titles (they carry each rho and its CI).
        metric: the score's name, for the y axis.
        higher_is_better: the metric's direction, said on the y axis.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=panel_titles, horizontal_spacing=0.1, shared_yaxes=True)
    done = points["status"] == "completed"
    for col, signal, label in ((1, "grad_norm", "early grad norm"), (2, "loss", "early loss")):
        for mask, name, marker in (
                (done, "completed (in rho)", {"color": "#2563eb", "size": 10, "line": {"width": 1, "color": "white"}}),
                (~done, "other status (not in rho)", {"color": "#9ca3af", "size": 10, "symbol": "x"})):
            part = points[mask]
            if part.empty:
                continue
            fig.add_trace(go.Scatter(
                x=part[signal], y=part["score"], mode="markers", marker=marker, name=name, legendgroup=name,
                showlegend=col == 1, text=part["hover"],
                hovertemplate=f"%{{text}}<br>{label} %{{x:.4g}}<br>{metric} %{{y:.4g}}<extra></extra>"),
                row=1, col=col)
        fig.update_xaxes(title_text=f"{label} (mean over window)", row=1, col=col)
    fig.update_yaxes(title_text=f"final {metric} ({'↑' if higher_is_better else '↓'} better)", row=1, col=1)
    fig.update_annotations(font_size=12)
    return _layout(fig, title, 380, legend={"orientation": "h", "y": -0.25})


def replay_scatter(summary: pd.DataFrame) -> go.Figure:
    """Compute used against regret, one point per replayable rule (``StoppingReplay.summary``
    rows with ``rule, token_fraction, mean_regret_rel, max_regret_rel, n_stopped, n_trials,
    best_kept_rate``)."""
    fig = go.Figure()
    for kind, part in summary.groupby(summary["rule"].str.split().str[0], sort=True):
        fig.add_trace(go.Scatter(
            x=part["token_fraction"], y=part["mean_regret_rel"], mode="markers", name=kind,
            marker={"size": 11, "symbol": "diamond" if kind == "asha" else "circle", "line": {"width": 1,
                                                                                           "color": "white"}},
            customdata=part[["rule", "n_stopped", "n_trials", "max_regret_rel", "best_kept_rate"]].to_numpy().tolist(),
            hovertemplate=("<b>%{customdata[0]}</b><br>compute used %{x:.1%}<br>mean regret %{y:.2%} "
                           "(max %{customdata[3]:.2%})<br>stopped %{customdata[1]} of %{customdata[2]} trials"
                           "<br>kept the best in %{customdata[4]:.0%} of cohorts<extra></extra>")))
    fig.add_trace(go.Scatter(x=[1.0], y=[0.0], mode="markers", name="no stopping",
                             marker={"size": 11, "symbol": "star", "color": "#111827"},
                             hovertemplate="no stopping: all compute, no regret<extra></extra>"))
    fig.update_xaxes(title_text="compute used (fraction of the completed trials' tokens)", tickformat=".0%",
                     range=[0, 1.05])
    top = summary["mean_regret_rel"].max()
    fig.update_yaxes(title_text="mean relative regret (best kept vs best)", tickformat=".1%",
                     range=[-0.002, max(0.05, 1.15 * top) if pd.notna(top) else 0.05])
    return _layout(fig, "stopping rules replayed on the completed trials", 380)


def stacked_phased_bars(pairs: pd.DataFrame) -> go.Figure:
    """Stacked vs phased side by side (``stacked_vs_phased`` rows plus a short ``label`` per pair):
    final score, and samples to peak (the recipe's sample efficiency)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("final score", "samples to peak (lower = more efficient)"),
                        horizontal_spacing=0.1)
    for strategy, color in (("stacked", "#2563eb"), ("phased", "#ea580c")):
        for col, measure in ((1, "score"), (2, "samples_to_peak")):
            fig.add_trace(go.Bar(
                x=pairs["label"], y=pairs[f"{measure}_{strategy}"], name=strategy, marker_color=color,
                legendgroup=strategy, showlegend=col == 1,
                hovertemplate=f"{strategy}<br>%{{x}}<br>{measure.replace('_', ' ')} %{{y:.4g}}<extra></extra>"),
                row=1, col=col)
    fig.update_xaxes(tickangle=-30 if len(pairs) > 3 else 0)
    return _layout(fig, "stacked vs phased", 400, barmode="group")
