"""``benchmarks/matrix.py`` judges the issue's target per cell and merges re-run peers into a cell.

The table in benchmarks/README.md is made by this code, so its verdicts (which cell misses, by
what) and the way a cell's lost peers are re-run and marked are tested here on made-up reports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def matrix(tmp_path, monkeypatch, load_script):
    module = load_script(ROOT / "benchmarks" / "matrix.py", "matrix")
    monkeypatch.setattr(module, "OUT", tmp_path / "out")
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    yield module
    sys.modules.pop("matrix", None)


def _row(key: str, tok_s: float | None, rss: float = 1000.0) -> dict:
    if tok_s is None:
        return {"key": key, "status": "error", "error": "worker exited with -9: "}
    return {"key": key, "status": "ok", "tokens_per_s": tok_s, "peak_rss_mb": rss, "padding_fraction": 0.01}


def _report(rows: list[dict]) -> dict:
    data = {"length_min": 20, "length_max": 900}
    return {"machine": {"cpus": 2, "affinity": [0, 1], "git": "abc1234"},
            "models": {"tiny": {"data": data, "results": rows}}}


CELL_ARGS = (1024, "20-1000", "tiny-h128", 2)


def test_a_cell_meeting_every_target_has_no_misses(matrix):
    rows = [_row("tunescout", 300, 500), _row("trl-sft", 100), _row("trl-padding-free", 200, 900),
            _row("trl-packing", 240), _row("hf-trainer", 90), _row("hf-trainer-mb1", 150)]
    text, misses = matrix.cell_row(matrix.Cell(*CELL_ARGS), _report(rows))
    assert misses == []
    assert "| 3.00× |" in text and "trl-packing | 1.25× |" in text and "| 2.00× |" in text  # x best HF: mb1


def test_each_target_missed_is_named_with_its_ratio(matrix):
    rows = [_row("tunescout", 140, 950), _row("trl-sft", 100), _row("trl-padding-free", 130, 900),
            _row("trl-packing", 120), _row("hf-trainer", None)]
    text, misses = matrix.cell_row(matrix.Cell(*CELL_ARGS), _report(rows))
    assert misses == ["hf-trainer failed", "x TRL default 1.40", "x fastest TRL 1.08", "peak RSS"]
    assert "**1.40× (miss)**" in text and "**1.08× (miss)**" in text and "(miss)**" in text.split("|")[10]


def test_fill_reruns_only_lost_peers_at_the_micro_batch_and_marks_them(matrix, monkeypatch):
    cell = matrix.Cell(*CELL_ARGS)
    folder = matrix.OUT / cell.name
    folder.mkdir(parents=True)
    rows = [_row("tunescout", 300, 500), _row("trl-sft", None), _row("trl-padding-free", None),
            _row("trl-packing", 240)]
    (folder / "throughput.json").write_text(json.dumps(_report(rows)))
    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        patch = Path(cmd[cmd.index("--out") + 1])
        fresh = _report([_row("trl-sft", 100), _row("trl-padding-free", 200, 900)])
        fresh["machine"].update(git="def5678", load_avg=[1.0, 1.0, 1.0])
        patch.write_text(json.dumps(fresh))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(matrix.subprocess, "run", fake_run)
    args = SimpleNamespace(threads=None, model=["tiny-h128"], max_length=[1024], lengths=["20-1000"],
                           cpus=None, force=False, micro_batch=2)
    assert matrix.fill(args) == 0
    cmd = seen["cmd"]
    assert cmd[cmd.index("--trainers") + 1] == "trl-sft,trl-padding-free"
    assert cmd[cmd.index("--micro-batch") + 1] == "2"
    kept = json.loads((matrix.RESULTS / f"{cell.name}.json").read_text())
    by_key = {r["key"]: r for r in kept["models"]["tiny"]["results"]}
    assert [r["key"] for r in kept["models"]["tiny"]["results"]] == ["tunescout", "trl-sft", "trl-padding-free",
                                                                     "trl-packing"]
    assert by_key["trl-sft"]["filled"]["micro_batch"] == 2
    assert by_key["trl-sft"]["filled"]["replaced_error"] == "worker exited with -9: "
    assert "filled" not in by_key["tunescout"]
    text, misses = matrix.cell_row(cell, kept)
    assert misses == []
    assert "trl-sft, trl-padding-free re-run alone at micro-batch 2" in text
    assert not (folder / ".claimed").exists()


def test_table_counts_cells_and_lists_those_not_run(matrix, capsys):
    matrix.RESULTS.mkdir(parents=True)
    cell = matrix.Cell(*CELL_ARGS)
    rows = [_row("tunescout", 300, 500), _row("trl-sft", 250), _row("trl-padding-free", 200, 900)]
    (matrix.RESULTS / f"{cell.name}.json").write_text(json.dumps(_report(rows)))
    assert matrix.table(SimpleNamespace()) == 0
    out = capsys.readouterr().out
    total = len(matrix.all_cells())
    verdict = f"target missed or not judged (a peer failed) in: {cell.name} (x TRL default 1.20)"
    assert f"1 of {total} cells run; {verdict}" in out
    assert "not run: " in out and out.count("ml") >= total - 1
    assert ("x TRL default: 1.20-1.20 over 1 cells; x fastest TRL: 1.20-1.20 over 1 cells; "
            "% of TRL padding-free's peak RSS: 55.56-55.56 over 1 cells") in out
