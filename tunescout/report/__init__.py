"""An HTML report of a study store: interactive plotly charts of the study and its analysis.

``build_report(store, "report.html")`` writes one self-contained page (plotly.js inlined once,
no network needed to view it) with sections ``summary``, ``curves``, ``heatmap``, ``cbs``,
``dynamics``, ``phases`` and ``recommend``. Every number on it comes from the study's tables or
from ``tunescout.analysis``; this package only lays them out.
"""

from tunescout.report.build import build_report

__all__ = ["build_report"]
