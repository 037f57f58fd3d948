"""The documentation: the mkdocs site builds in strict mode, and the README stays a short front door.

Strict mode with the validation settings of ``mkdocs.yml`` fails on a broken link, an unknown
anchor or a page missing from the nav, so this test is the docs' CI check.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
FORBIDDEN = ("../shared", "MISSION.md", "DESIGN.md")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def test_site_builds_strict(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"),
         "-f", str(ROOT / "mkdocs.yml")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr}\n{proc.stdout}"
    assert (tmp_path / "site" / "index.html").is_file()


def test_readme_is_a_short_front_door_with_working_links() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 220, "README.md should stay a front door; move details to docs/"
    assert "make demo" in text and "make test" in text
    pages = [README, *sorted(DOCS.glob("*.md"))]
    assert len(pages) > 1, "docs/ holds no pages"
    for page in pages:
        body = page.read_text(encoding="utf-8")
        for word in FORBIDDEN:
            assert word not in body, f"{page.relative_to(ROOT)} mentions {word!r}, which is outside the repository"
    broken = []
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        path = target.split("#", 1)[0]
        if path and not (ROOT / path).exists():
            broken.append(target)
    assert not broken, f"README.md links to files that do not exist: {broken}"
