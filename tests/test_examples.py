"""Every shipped YAML loads; the SmolLM2 example really trains (slow: needs `make smollm2`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunescout.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_is_valid(path: Path) -> None:
    config = load_config(path)
    assert config.model and config.data


def test_every_preset_is_a_valid_train_config() -> None:
    from tunescout.config import build_config
    from tunescout.presets import load_presets

    presets = load_presets()
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
    from tunescout.train.models import smollm2_gguf

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
