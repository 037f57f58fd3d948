"""Build the report: read a study store, run the sections, render one self-contained HTML page.

The page carries everything it needs: plotly.js is inlined once in the head, each chart is a div
plus the call that draws it, and the CSS lives in the template. It opens from disk with no network.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Callable
from pathlib import Path

import plotly
from jinja2 import Environment, PackageLoader, StrictUndefined
from plotly.offline import get_plotlyjs

import tunescout
from tunescout.analysis import results_from_store
from tunescout.report.analysis_sections import cbs_section, dynamics_section, rank_groups, recommend_section
from tunescout.report.blocks import Block, Section, StudyData, place_figures
from tunescout.report.study_sections import curves_section, heatmap_section, phases_section, summary_section
from tunescout.study.export import store_tables
from tunescout.study.store import open_store

__all__ = ["build_report", "read_study_data", "render_report"]

log = logging.getLogger("tunescout.report")

SECTIONS: tuple[tuple[str, str, Callable[[StudyData], Section]], ...] = (
    ("summary", "Summary", summary_section),
    ("curves", "Learning curves", curves_section),
    ("heatmap", "Batch size × learning rate", heatmap_section),
    ("cbs", "Coverage-based Search ranking", cbs_section),
    ("dynamics", "Early dynamics", dynamics_section),
    ("phases", "Stacked vs phased", phases_section),
    ("recommend", "Recommended configurations", recommend_section),
)
"""Section id, title (used when the section fails) and builder, in page order. Each builder is a
pure function of the study data returning its section."""


def read_study_data(store_path: str | Path, *, tau: float = 0.95, window: float = 0.1, top: int = 5,
               study: str | None = None) -> StudyData:
    """Read a study store (read-only) into the tables every section uses: the trials of the
    study's current spec version (the summary counts the superseded ones it leaves out).

    Args:
        study: which study of the store (None: its only one).

    Raises:
        StoreError: no store at ``store_path`` (it is never created here), not a tunescout store,
            or a store of several studies and no ``study``.
        ValueError: a store without a study, or a study without trials.
    """
    with open_store(store_path, readonly=True) as store:
        row = store.study(study)
        if row is None:
            raise ValueError(f"{store_path}: the store holds no study (run `tunescout sweep STUDY.yaml` first)")
        name = row["name"]
        tables = store_tables(store, name)
        if tables["trials"].empty:
            raise ValueError(f"{store_path}: study {name!r} has no trials; run `tunescout sweep` on its YAML first")
        counts, tokens = store.counts(name), store.tokens_trained(name)
        superseded = sum(store.counts(name, all_versions=True).values()) - sum(counts.values())
        hparams = {t["trial_id"]: t["hparams"] for t in store.trials(name)}
        scores = results_from_store(store, study=name)
    rankings, rank_error = rank_groups(scores, tau)
    return StudyData(name=name, spec=json.loads(row["spec"]), trials=tables["trials"],
                     telemetry=tables["telemetry"], results=tables["results"], counts=counts, tokens_trained=tokens,
                     elapsed_s=float(row.get("elapsed_s") or 0.0), scores=scores, hparams=hparams, tau=tau,
                     window=window, top=top, superseded=superseded, decisions=tables["decisions"],
                     rankings=rankings, rank_error=rank_error)


def _sections(data: StudyData) -> list[Section]:
    out = []
    for sid, title, builder in SECTIONS:
        try:
            out.append(builder(data))
        except (ValueError, KeyError) as exc:  # one broken analysis must not cost the whole report
            log.warning("report section %s failed: %s", sid, exc)
            out.append(Section(sid, title, "", [Block("note", text=f"This section could not be built: {exc}")]))
    return out


def render_report(data: StudyData, headline: str | None = None) -> str:
    """The report of a loaded study as one HTML string (``headline``: a first section of its own)."""
    env = Environment(loader=PackageLoader("tunescout.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    template = env.get_template("report.html.j2")
    return template.render(
        study=data.name, plotly_js=get_plotlyjs(),
        sections=place_figures(([Section("result", "Result", "", [Block("note", text=headline)])] if headline else [])
                               + _sections(data)),
        generated=_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        versions=f"tunescout {tunescout.__version__}, plotly {plotly.__version__}",
        params=f"τ = {data.tau:g}, early window = {data.window:.0%}, top = {data.top}")


def build_report(store_path: str | Path, out_path: str | Path, *, tau: float = 0.95, window: float = 0.1,
                 top: int = 5, study: str | None = None, headline: str | None = None) -> Path:
    """Write the HTML report of a study store.

    Args:
        store_path: the study's SQLite store.
        out_path: the HTML file to write (parent folders are created).
        tau: CBS coverage threshold (relative score a config must reach to cover a dataset).
        window: early window for the dynamics analysis, as a fraction of planned samples.
        top: configurations recommended per model × method.
        study: which study of the store (None: its only one).
        headline: what the study decided, shown first (``tune``: the winner, its score and where
            its model is).

    Returns:
        The path written.

    Raises:
        StoreError: no store at ``store_path``, or not a tunescout store.
        ValueError: an empty store (no study, or no trials), a file that is not a store, or bad
            ``tau``/``window``/``top``.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}")
    if not 0.0 < window <= 1.0:
        raise ValueError(f"window must be in (0, 1], got {window}")
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    page = render_report(read_study_data(store_path, tau=tau, window=window, top=top, study=study), headline)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
