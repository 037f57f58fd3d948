"""Every shipped YAML loads; the SmolLM2 example really trains (slow: needs `make smollm2`).

Shipped YAMLs are found by glob, and one test fails when a YAML under ``examples/`` or
``tunescout/`` is loaded by none of the tests below, so a new one cannot be forgotten.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunescout.builtins import BUILTIN_PREFIX, builtin_names
from tunescout.config import build_config, load_config
from tunescout.demo.study import DEMO_STUDY, prepare_demo
from tunescout.presets import load_presets
from tunescout.study.spec import expand_trials, load_study

ROOT = Path(__file__).resolve().parents[1]
TRAIN_CONFIGS = sorted((ROOT / "examples").glob("*.yaml"))
"""Run configs (``tunescout train``), loaded with :func:`load_config`."""
EXAMPLE_STUDIES = sorted((ROOT / "examples" / "study").glob("*.yaml"))
STUDIES = [*EXAMPLE_STUDIES, DEMO_STUDY]
"""Study files (``tunescout sweep``), loaded with :func:`load_study`."""
PRESET_FILES = sorted((ROOT / "tunescout" / "presets").glob("*.yaml"))
"""Preset files, loaded with :func:`load_presets`."""


def _shipped_yamls() -> list[Path]:
    """Every YAML under examples/ and tunescout/, leaving out what a local run writes there
    (``runs/`` and ``*.db.runs/`` folders, each run with its own ``config.yaml``)."""
    found = set()
    for folder in ("examples", "tunescout"):
        for pattern in ("*.yaml", "*.yml"):
            for path in (ROOT / folder).rglob(pattern):
                parts = path.relative_to(ROOT).parts[:-1]
                if not any(part == "runs" or part.endswith(".runs") for part in parts):
                    found.add(path)
    return sorted(found)


def test_every_shipped_yaml_is_loaded_by_a_test() -> None:
    covered = {*TRAIN_CONFIGS, *STUDIES, *PRESET_FILES}
    missing = [str(p.relative_to(ROOT)) for p in _shipped_yamls() if p not in covered]
    assert not missing, f"no test loads {missing}: add each to TRAIN_CONFIGS, STUDIES or PRESET_FILES"
    assert len(covered) >= 6 and all(p.exists() for p in covered)


def _check_builtin(model: str) -> None:
    if model.startswith(BUILTIN_PREFIX):
        assert model.removeprefix(BUILTIN_PREFIX) in builtin_names(), model


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_shipped_config_is_valid(path: Path) -> None:
    config = load_config(path)
    assert config.model and config.data
    _check_builtin(config.model)


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_study_is_valid(path: Path, tmp_path: Path) -> None:
    if path == DEMO_STUDY:  # its datasets are generated: load the copy `tunescout demo` writes beside them
        path = prepare_demo(tmp_path)
    spec = load_study(path)
    assert spec.models and spec.datasets and expand_trials(spec)
    assert all(Path(d.train).exists() and Path(d.eval).exists() for d in spec.datasets)
    for model in spec.models:
        _check_builtin(model)


def test_every_preset_is_a_valid_train_config() -> None:
    presets = load_presets()
    assert {p.file for p in presets} == {f.name for f in PRESET_FILES}  # every file holds presets
    assert len({p.name for p in presets}) == len(presets) >= 7
    for p in presets:
        config = build_config({**p.config, "method": p.method, "model": "some/model", "data": ["d.jsonl"]})
        assert config.method == p.method and p.provenance and p.source and p.families
    by_name = {p.name: p for p in presets}
    assert by_name["recipe-mistral-full"].config["learning_rate"] == 1e-6
    assert by_name["cbs-llama3-8b-lora"].config["lora"] == {"r": 128, "alpha": 32}
    assert "secondary reproduction" in by_name["cbs-mistral-7b-lora"].source


def test_default_config_builds(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from tunescout.demo import default_config

    config = default_config(str(tmp_path / "run"))
    assert Path(config.model, "config.json").exists()
    assert all(Path(d.path).exists() for d in config.data)


@pytest.mark.slow
def test_smollm2_gguf_lora_example(tmp_path: Path) -> None:
    """LoRA on a real pretrained model, offline: loss must fall over a few steps."""
    pytest.importorskip("gguf")
    from tunescout.train import read_telemetry, train
    from tunescout.builtins import smollm2_gguf

    smollm2_gguf()  # fails with the install command when missing
    config = load_config(ROOT / "examples" / "smollm2-lora.yaml", [f"output_dir={tmp_path / 'run'}", "progress=false"])
    result = train(config)
    assert result.status == "completed" and result.steps == 4
    losses = [r["loss"] for r in read_telemetry(tmp_path / "run" / "telemetry.jsonl")]
    assert losses[-1] < losses[0]
    adapter = json.loads((tmp_path / "run" / "model" / "adapter_config.json").read_text())
    assert adapter["r"] == 16

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    path = smollm2_gguf()
    base = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    PeftModel.from_pretrained(base, tmp_path / "run" / "model")
