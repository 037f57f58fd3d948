"""What a report section is made of, and the study data every section reads.

A section is a list of blocks (a chart, a table, a note, a YAML snippet) that a pure function
of the study data returns; the template renders each kind. Sections never build HTML
themselves: values go to the template as plain strings and jinja2 escapes them; only plotly's
own figure markup, made when the page is rendered (:func:`place_figures`), is passed through.
"""

from __future__ import annotations

import dataclasses
import html
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from tunescout.report.figures import figure_html

__all__ = ["Block", "Section", "StudyData", "Table", "fmt", "fmt_rho", "is_missing", "place_figures", "short_model"]


@dataclass
class Table:
    """A table of already formatted cells; ``numeric`` right-aligns those columns."""

    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)
    caption: str = ""
    scroll: bool = False
    """Long tables scroll inside a box instead of stretching the page."""

    @classmethod
    def of(cls, frame: pd.DataFrame, formats: dict[str, Any], caption: str = "", scroll: bool = False) -> "Table":
        """Columns of ``frame`` named in ``formats`` (column → header, or (header, formatter)).
        A formatter is a format spec (``".3f"``, ``".1%"``) or a callable."""
        headers, cells, numeric = [], [], []
        for col, how in formats.items():
            header, spec = (how, None) if isinstance(how, str) else how
            headers.append(header)
            numeric.append(spec is not None and not callable(spec))
            cells.append([spec(v) if callable(spec) else fmt(v, spec) for v in frame[col]])
        return cls(headers, [list(r) for r in zip(*cells)] if cells else [], numeric, caption, scroll)


@dataclass
class Block:
    """One piece of a section. ``kind``: ``figure`` (a plotly ``figure``; its ``markup`` and
    ``fig_id`` are made at render time), ``table``, ``note`` (``text``), ``callout`` (a highlighted
    note), ``code`` (``text`` in a ``<pre>``), ``facts`` (``table`` as a two-column list) or
    ``heading`` (``title``)."""

    kind: str
    title: str = ""
    text: str = ""
    markup: str = ""
    table: Table | None = None
    fig_id: str = ""
    figure: go.Figure | None = None


@dataclass
class Section:
    """``<section id=...>`` with a heading, a one-line lead and its blocks."""

    id: str
    title: str
    lead: str
    blocks: list[Block] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.blocks.append(Block("note", text=text))

    def heading(self, title: str) -> None:
        self.blocks.append(Block("heading", title=title))

    def table(self, table: Table) -> None:
        self.blocks.append(Block("table", table=table))

    def chart(self, fig: go.Figure, prefix: str) -> None:
        """A figure; ``prefix`` starts its element id (``fig-<prefix>-<n>``, numbered on the page)."""
        self.blocks.append(Block("figure", figure=fig, fig_id=prefix))


def place_figures(sections: list[Section]) -> list[Section]:
    """The sections with each figure's markup made and its element id numbered across the page."""
    count = 0
    out = []
    for sec in sections:
        blocks = []
        for b in sec.blocks:
            if b.kind == "figure" and b.figure is not None:
                count += 1
                fig_id = f"fig-{b.fig_id}-{count}"
                b = dataclasses.replace(b, markup=figure_html(b.figure, fig_id), fig_id=fig_id, figure=None)
            blocks.append(b)
        out.append(dataclasses.replace(sec, blocks=blocks))
    return out


@dataclass
class StudyData:
    """The study's tables and the report's parameters: what every section reads."""

    name: str
    spec: dict[str, Any]
    trials: pd.DataFrame
    telemetry: pd.DataFrame
    results: pd.DataFrame
    counts: dict[str, int]
    tokens_trained: int
    elapsed_s: float
    scores: pd.DataFrame
    """``tunescout.analysis.results_from_store`` (empty when no trial has finished)."""
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each trial's hyperparameters as the store keeps them (the ``hp.*`` columns of a table
    turn an int into a float wherever another trial lacks that key)."""
    tau: float = 0.95
    window: float = 0.1
    top: int = 5
    superseded: int = 0
    """Trials of earlier spec versions in the store, left out of every section."""
    decisions: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Promotion decisions (``trial_id, rung, rank, n, kept, reason``); empty without promotion."""
    rankings: dict[tuple, pd.DataFrame | str] = field(default_factory=dict)
    """CBS ranking per (model, method), or why that group could not be ranked (read by the CBS
    section and the recommendations; see ``analysis_sections.rank_groups``)."""
    rank_error: str = ""
    """Why nothing at all was ranked ('' when some group was)."""

    def axis(self, key: str) -> pd.Series:
        """A hyperparameter per trial: the grid column ``hp.<key>``, else the study's fixed value."""
        fixed = self.spec.get("fixed") or {}
        column = f"hp.{key}"
        if column in self.trials:
            values = self.trials[column]
            return values.fillna(fixed[key]) if key in fixed else values
        return pd.Series(fixed.get(key, math.nan), index=self.trials.index, dtype=object)

    def hover(self) -> dict[str, str]:
        """Per trial, what a hover shows: id, cohort, every hyperparameter, seed, status (and why)."""
        out = {}
        hp_cols = [c for c in self.trials.columns if c.startswith("hp.")]
        for row in self.trials.to_dict("records"):
            hps = ", ".join(f"{c[3:]}={_plain(row[c])}" for c in hp_cols if not is_missing(row[c]))
            status = row["status"] + (f" ({row['reason']})" if row.get("reason") else "")
            lines = [f"{short_model(row['model'])} · {row['dataset']} · {row['method']} · seed {row['seed']}",
                     hps or "no grid hyperparameters", f"status: {status}"]
            # plotly reads hover text as a little HTML: escape the values, keep our own tags
            out[row["trial_id"]] = "<br>".join([f"<b>trial {html.escape(str(row['trial_id']))}</b>",
                                                *(html.escape(x) for x in lines)])
        return out


def is_missing(value: Any) -> bool:
    """None or a float NaN: a cell with no value."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def short_model(name: str) -> str:
    """A model's display name: a local path by its last component, anything else as given."""
    text = str(name)
    return text.rstrip("/").rsplit("/", 1)[-1] if text.startswith(("/", "~", "./", "../")) else text


def fmt(value: Any, spec: str | None = None) -> str:
    """A cell: ``n/a`` for a missing value, else ``format(value, spec)`` (``str`` without a spec)."""
    if is_missing(value) or value is pd.NA:
        return "n/a"
    if spec is None:
        return _plain(value)
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def fmt_rho(rho: float, lo: float, hi: float, n: int) -> str:
    """``+0.80 [0.20, 1.00] (n=6)``, or ``n/a (n=2)`` when the correlation is undefined."""
    if is_missing(rho):
        return f"n/a (n={n})"
    ci = "" if is_missing(lo) or is_missing(hi) else f" [{lo:+.2f}, {hi:+.2f}]"
    return f"{rho:+.2f}{ci} (n={n})"
