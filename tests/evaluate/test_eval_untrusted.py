"""``tunescout eval`` on model files of unknown origin: one clear error line, nothing run, stdin unread."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunescout.cli import main
from tunescout.demo.tasks import write_jsonl

ROWS = [{"prompt": "Say alpha", "completion": "alpha"}]

REMOTE_CODE = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")
from transformers import PretrainedConfig


class EvilConfig(PretrainedConfig):
    model_type = "evilnet"
"""


def _remote_code_model(folder: Path, marker: Path) -> Path:
    """A folder whose config.json asks for its own code (``auto_map``) for an unknown model type."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evilnet", "auto_map": {"AutoConfig": "evil_code.EvilConfig",
                                              "AutoModelForCausalLM": "evil_code.EvilModel"}}))
    (folder / "evil_code.py").write_text(REMOTE_CODE.format(marker=str(marker)))
    return folder


def _cli(args: list[str], tmp_path: Path, stdin: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "tunescout.cli", *args], input=stdin, capture_output=True, text=True,
                          check=False, env=env, timeout=300)


def test_eval_refuses_a_model_with_its_own_code_even_when_stdin_says_yes(tmp_path: Path) -> None:
    marker = tmp_path / "RAN"
    folder = _remote_code_model(tmp_path / "evil", marker)
    data = write_jsonl(ROWS, tmp_path / "eval.jsonl")
    done = _cli(["eval", str(folder), "--data", str(data), "--metric", "accuracy"], tmp_path, stdin="y\ny\n")
    assert not marker.exists()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "[y/N]" not in done.stdout + done.stderr
    assert f"error: {folder / 'config.json'} asks to run Python code" in done.stderr
    assert "trust_remote_code: true" in done.stderr and "--trust-remote-code" in done.stderr


def test_eval_trust_remote_code_reaches_the_loader(tmp_path: Path, monkeypatch, capsys) -> None:
    import tunescout.evaluate.run as run

    seen = {}

    def fake_load(path, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(run, "load_pretrained", fake_load)
    data = write_jsonl(ROWS, tmp_path / "eval.jsonl")
    assert main(["eval", str(tmp_path), "--data", str(data), "--trust-remote-code"]) == 2
    assert seen["trust_remote_code"] is True
    assert main(["eval", str(tmp_path), "--data", str(data)]) == 2
    assert seen["trust_remote_code"] is False
    capsys.readouterr()


@pytest.mark.parametrize(("content", "match"), [
    (b"GGUF\x03\x00\x00\x00\x00\x00", "is a truncated GGUF file"),
    (b"0123456789", "is not a GGUF file"),
])
def test_eval_of_a_broken_gguf_is_one_error_line(tmp_path: Path, capsys, content: bytes, match: str) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    data = write_jsonl(ROWS, tmp_path / "eval.jsonl")
    assert main(["eval", str(path), "--data", str(data)]) == 2
    assert f"error: {path} {match}" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "content"), [
    ("config.yaml", "model: [unclosed\n"),
    ("config.yaml", "- a list\n"),
    ("run.json", "{not json"),
    ("run.json", '{"resolved": [1]}'),
])
def test_eval_of_a_run_directory_with_a_damaged_record_names_it(tmp_path: Path, capsys, name: str,
                                                                content: str) -> None:
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "config.yaml").write_text("model: x\n")
    (run / name).write_text(content)
    data = write_jsonl(ROWS, tmp_path / "eval.jsonl")
    assert main(["eval", str(run), "--data", str(data)]) == 2
    assert f"error: {run / name}: unreadable run record (" in capsys.readouterr().err
