"""Telemetry files: truncation on resume."""

from __future__ import annotations

import json
from pathlib import Path

from tunescout.train.telemetry import read_telemetry, truncate_records


def test_truncate_keeps_steps_up_to_the_checkpoint_and_drops_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "telemetry.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0}) for s in (1, 2, 3)]
    path.write_text("\n".join(lines) + "\n" + '{"step": 4, "lo')  # killed in the middle of a write
    truncate_records(path, 2)
    assert [r["step"] for r in read_telemetry(path)] == [1, 2]
    truncate_records(tmp_path / "missing.jsonl", 2)  # nothing to truncate
    assert not (tmp_path / "missing.jsonl").exists()
