"""The shipped demo study matches the generated datasets, and its files are deterministic."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from tunescout.demo.study import DEMO_STUDY, prepare_demo
from tunescout.demo.tasks import DEMO_TASKS
from tunescout.study.spec import expand_trials, load_study


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def test_shipped_study_lists_every_demo_task_with_its_metric() -> None:
    raw = yaml.safe_load(DEMO_STUDY.read_text())
    by_name = {d["name"]: d for d in raw["datasets"]}
    assert set(by_name) <= set(DEMO_TASKS) and len(by_name) >= 6
    assert len({d["task_type"] for d in raw["datasets"]}) >= 4
    for name, entry in by_name.items():
        task = DEMO_TASKS[name]
        assert (entry["metric"], entry["task_type"], entry["max_new_tokens"]) == (
            task.metric, task.task_type, task.max_new_tokens)
    assert raw["stopping"] == {"rule": "asha", "signal": "val_loss", "mode": "promote", "rungs": [0.25], "eta": 3}
    assert set(raw["methods"]) == {"full", "lora"}
    assert {"learning_rate", "batch_size"} <= set(raw["grid"])


def test_prepare_demo_is_deterministic_and_the_study_loads(tmp_path: Path) -> None:
    a, b = prepare_demo(tmp_path / "a"), prepare_demo(tmp_path / "b")
    assert _digest(a.parent) == _digest(b.parent)
    spec = load_study(a)
    assert all(Path(d.train).exists() and Path(d.eval).exists() for d in spec.datasets)
    trials = expand_trials(spec)
    assert len(trials) == len(spec.datasets) * 2 * 6 == 72
    assert sorted(p.name for p in (a.parent / "data").iterdir()) == sorted(
        f"{d.name}_{split}.jsonl" for d in spec.datasets for split in ("train", "eval"))
    assert spec.store == str(a.parent / "demo.db")


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path, monkeypatch) -> None:
    """The whole demo on a cold cache (minutes): ends with a report."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    from tunescout.workflows.demo import run_demo

    report = run_demo(tmp_path / "demo", say=lambda m: None)
    assert report.exists() and report.stat().st_size > 100_000
