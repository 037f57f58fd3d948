"""The report in a real browser: headless Chromium opens the file with no network, draws every
chart without a script error, shows a trial's config on hover, and leaves a screenshot.

Needs Debian's ``chromium`` at /usr/bin/chromium and the playwright package (its own browser
download is never used). Without them it is skipped on a developer's machine but fails on CI
(``CI=true``, as GitHub Actions and most CI services set it): there a skip would pass the job
with the browser check never run. The screenshot goes to ``$TUNESCOUT_ARTIFACTS`` (default: the
test's tmp dir) as ``report.png``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]
SECTIONS = ["summary", "curves", "heatmap", "cbs", "dynamics", "phases", "recommend"]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None


def _missing_browser() -> str | None:
    """Why the browser check cannot run here, or None when it can."""
    if sync_playwright is None:
        return "playwright is not installed (pip install playwright)"
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


def _require_browser(missing: str | None, ci: str | None) -> None:
    """Skip for ``missing`` locally; fail with it when ``ci`` (``$CI``) is ``true``."""
    if missing is None:
        return
    if (ci or "").strip().lower() == "true":
        pytest.fail(f"{missing}; CI=true, so the browser check must run, not skip", pytrace=False)
    pytest.skip(missing)


@pytest.mark.parametrize(("missing", "ci", "outcome"), [
    (None, "true", None), (None, None, None),
    ("no Chromium", "true", pytest.fail.Exception), ("no Chromium", "TRUE", pytest.fail.Exception),
    ("no Chromium", None, pytest.skip.Exception), ("no Chromium", "false", pytest.skip.Exception),
    ("no Chromium", "", pytest.skip.Exception),
])
def test_a_missing_browser_skips_locally_and_fails_on_ci(missing, ci, outcome) -> None:
    if outcome is None:
        _require_browser(missing, ci)
        return
    with pytest.raises(outcome, match="no Chromium"):
        _require_browser(missing, ci)


CHART_STATE = """() => Array.from(document.querySelectorAll('.plotly-graph-div')).map(div => ({
    id: div.id,
    plotted: div.classList.contains('js-plotly-plot') && div.querySelectorAll('.main-svg').length > 0
             && div.querySelectorAll('.main-svg *').length > 20,
}))"""

FIRST_CURVE_POINT = """() => {
    document.documentElement.style.scrollBehavior = 'auto';
    const gd = document.querySelector('#curves .js-plotly-plot');
    gd.scrollIntoView({block: 'center'});
    const point = gd.calcdata[0][Math.floor(gd.calcdata[0].length / 2)];
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
    return {trials: gd.data.map(t => t.legendgroup), x: box.left + xa._offset + xa.c2p(point.x),
            y: box.top + ya._offset + ya.c2p(point.y)};
}"""


def _open(browser, report: Path, errors: list[str], remote: list[str]):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))

    def route(r):  # the page must not need the network: record and refuse anything that is not the file
        if r.request.url.startswith(("file:", "data:", "blob:", "about:")):
            return r.continue_()
        remote.append(r.request.url)
        return r.abort()

    page.route("**/*", route)
    page.goto(report.as_uri(), wait_until="load")
    page.wait_for_function("() => document.querySelectorAll('.plotly-graph-div .main-svg').length > 0")
    return page


def test_report_renders_in_headless_chromium(main_report: Path, strategy_store: Path, tmp_path: Path) -> None:
    # in the test, not a fixture: on CI a missing browser is this test's failure, not a setup error
    _require_browser(_missing_browser(), os.environ.get("CI"))
    from tunescout.report import build_report

    artifacts = Path(os.environ.get("TUNESCOUT_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    strategy_report = build_report(strategy_store, tmp_path / "strategy.html")
    errors: list[str] = []
    remote: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            for report, shot in ((main_report, "report.png"), (strategy_report, "report-strategy.png")):
                page = _open(browser, report, errors, remote)
                for sid in SECTIONS:
                    section = page.locator(f"section#{sid}")
                    assert section.count() == 1 and section.is_visible(), sid
                    assert section.locator("h2").is_visible(), sid
                charts = page.evaluate(CHART_STATE)
                assert charts, "no chart on the page"
                assert [c["id"] for c in charts if not c["plotted"]] == []
                point = page.evaluate(FIRST_CURVE_POINT)  # a real mouse over a point of the first line
                page.mouse.move(point["x"], point["y"])
                hover = page.locator("#curves .hoverlayer .hovertext").first
                hover.wait_for(timeout=5000)
                text = hover.text_content()
                # the trial under the mouse (lines may overlap: any trial of this chart)
                assert any(f"trial {t}" in text for t in point["trials"]), text
                assert "learning_rate=" in text and "status:" in text
                page.screenshot(path=str(artifacts / shot), full_page=True)
                page.close()
        finally:
            browser.close()
    assert errors == []
    assert remote == []
    assert (artifacts / "report.png").stat().st_size > 10_000
