"""The demo base model's cache key covers what builds it, so a changed build never reuses an old cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import tunescout.demo.base as base


def test_the_key_changes_with_the_code_the_settings_and_the_architecture(tmp_path, monkeypatch) -> None:
    package = Path(base.__file__).resolve().parents[1]
    mirror = tmp_path / "tunescout"
    for entry in base.BUILD_SOURCES:
        source = package / entry
        if source.is_dir():
            shutil.copytree(source, mirror / entry, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (mirror / entry).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, mirror / entry)
    monkeypatch.setattr(base, "__file__", str(mirror / "demo" / "base.py"))
    key = base.build_key()
    assert key == base.build_key() and len(key) == 12  # stable
    assert base.base_model_dir().name == f"demo-base-{key}"

    loss = mirror / "train" / "loss.py"
    loss.write_text(loss.read_text() + "\n# a change to the training step\n")
    changed = base.build_key()
    assert changed != key

    monkeypatch.setitem(base.PRETRAIN, "learning_rate", 3e-3)
    assert base.build_key() not in (key, changed)
    monkeypatch.setitem(base.PRETRAIN, "learning_rate", 6e-3)
    monkeypatch.setitem(base.ARCH, "hidden_size", 64)
    assert base.build_key() not in (key, changed)
    assert base.build_key(seed=1) != base.build_key(seed=0)
