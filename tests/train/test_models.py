"""Model-loading helpers: ``dtype: auto`` never picks float16 (tunescout runs no gradient scaler)."""

from __future__ import annotations

import pytest
import torch

from tunescout.train.models import resolve_dtype


@pytest.mark.parametrize(("cuda", "bf16", "expected"), [
    (False, False, torch.float32),  # CPU: bf16 matmuls are slow there
    (True, True, torch.bfloat16),
    (True, False, torch.float32),  # a GPU without bf16 (V100, T4) trains in float32, not float16
])
def test_auto_dtype_is_bf16_or_float32(monkeypatch, cuda: bool, bf16: bool, expected: torch.dtype) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    device = torch.device("cuda" if cuda else "cpu")
    assert resolve_dtype("auto", device) == expected
    assert resolve_dtype("float32", device) == torch.float32 and resolve_dtype("bfloat16", device) == torch.bfloat16


def test_a_model_marked_gguf_saves_as_the_float_model_it_is(tiny_model_dir, tmp_path) -> None:
    """transformers marks a model read from a GGUF file as quantised (it was de-quantised on load)
    and refuses to save it; merged LoRA runs and full fine-tuning of GGUF bases lost their model
    after training. The mark is dropped at save, and the folder loads without the GGUF file."""
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM

    from tunescout.train.models import save_model

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.hf_quantizer = SimpleNamespace(quantization_config=SimpleNamespace(quant_method="gguf"))
    with pytest.raises(ValueError, match="quantized with gguf and is not serializable"):
        model.save_pretrained(tmp_path / "refused")
    save_model(model, None, tmp_path / "saved")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.slow
def test_merge_lora_and_tune_best_on_the_gguf_smollm2(tmp_path) -> None:
    """On the real GGUF base: `merge_lora: true` saves, and `tune`'s best/ loads on a clean
    transformers with AutoModelForCausalLM (an adapter's base there is a folder that needs the
    GGUF file's name to load)."""
    import subprocess
    import sys

    from tunescout.cli import main
    from tunescout.demo.tasks import make_rows, write_jsonl

    write_jsonl(make_rows("sentiment", 16, seed=0), tmp_path / "train.jsonl")
    write_jsonl(make_rows("sentiment", 4, seed=1), tmp_path / "eval.jsonl")
    common = ["--model", "builtin:smollm2-135m-instruct", "--method", "lora", "--train", str(tmp_path / "train.jsonl"),
              "--eval", str(tmp_path / "eval.jsonl"), "--metric", "accuracy", "--out", str(tmp_path / "tune"),
              "--preset", "cbs-llama3-8b-lora", "max_steps=1", "batch_size=4", "max_length=128",
              "max_tokens_per_micro_batch=512", "lora.r=4"]
    assert main(["tune", *common]) == 0
    code = ("import sys; from transformers import AutoModelForCausalLM; "
            "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); print(type(m).__name__)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "tune" / "best")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "LlamaForCausalLM" in done.stdout, done.stderr
