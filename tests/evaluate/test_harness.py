"""The lm-evaluation-harness bridge on the tiny model: a local multiple-choice task over a local
JSON file (no network), scored on the model in memory, checked against log-likelihoods by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness_tasks import DOCS, write_mc_task

from tunescout.config import ConfigError
from tunescout.evaluate.harness import HarnessMetric, harness_score, parse_harness_metric, run_harness
from tunescout.evaluate.metrics import get_metric

pytest.importorskip("lm_eval")

def loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """Sum of log p(continuation tokens | context) under ``model``, written out independently."""
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    cont = whole[len(ctx):]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    return float(sum(logprobs[len(ctx) + i - 1, token] for i, token in enumerate(cont)))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    from tunescout.train.models import load_pretrained

    model, tokenizer, _ = load_pretrained(str(tiny_model_dir))
    return model, tokenizer


def _by_hand(model, tokenizer) -> tuple[float, list[list[float]]]:
    lls = [[loglikelihood(model, tokenizer, f"Question: {d['question']}\nAnswer:", f" {c}") for c in d["choices"]]
           for d in DOCS]
    acc = sum(max(range(len(ll)), key=ll.__getitem__) == d["label"] for ll, d in zip(lls, DOCS)) / len(DOCS)
    return acc, lls


def test_multiple_choice_acc_equals_the_one_computed_from_log_likelihoods(tiny, tmp_path: Path) -> None:
    model, tokenizer = tiny
    doc = run_harness(model, tokenizer, ["tiny_mc"], include_path=str(write_mc_task(tmp_path)), samples=True)
    acc, lls = _by_hand(model, tokenizer)
    assert doc["n"] == {"tiny_mc": len(DOCS)}
    assert doc["scores"]["tiny_mc"]["acc"] == pytest.approx(acc)
    for sample in doc["samples"]["tiny_mc"]:
        harness_lls = [resp[0][0] for resp in sample["resps"]]
        assert harness_lls == pytest.approx(lls[sample["doc_id"]], abs=1e-4)
    metric = HarnessMetric(("tiny_mc",), "acc")
    assert harness_score(doc, metric) == pytest.approx(acc)
    assert not model.training  # eval mode as it was


def test_an_adapter_is_scored_in_memory_as_trained(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A PeftModel goes to the harness as is: its score is the adapted model's, not the base's."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    model.train()
    doc = run_harness(model, tokenizer, ["tiny_mc"], include_path=str(write_mc_task(tmp_path)), samples=True,
                      limit=3)
    assert model.training  # the mode is restored
    model.eval()
    for sample in doc["samples"]["tiny_mc"]:
        d = DOCS[sample["doc_id"]]
        expected = [loglikelihood(model, tokenizer, f"Question: {d['question']}\nAnswer:", f" {c}") for c in d["choices"]]
        assert [r[0][0] for r in sample["resps"]] == pytest.approx(expected, abs=1e-4)
    with model.disable_adapter():  # and differs from the base model's
        base_ll = loglikelihood(model, tokenizer, "Question: What colour is the sky?\nAnswer:", " blue")
    assert abs(base_ll - loglikelihood(model, tokenizer, "Question: What colour is the sky?\nAnswer:", " blue")) > 1e-3


def test_unknown_task_is_an_error_naming_it(tiny, tmp_path: Path) -> None:
    model, tokenizer = tiny
    with pytest.raises(ValueError, match=r"unknown harness task\(s\) \['tiny_mcq'\]"):
        run_harness(model, tokenizer, ["tiny_mcq"], include_path=str(write_mc_task(tmp_path)))


def test_harness_metric_mappings_parse_name_and_direction() -> None:
    m = parse_harness_metric({"harness": ["arc_easy", "hellaswag"], "key": "acc_norm", "num_fewshot": 5})
    assert m.name == "harness:arc_easy+hellaswag:acc_norm" and m.num_fewshot == 5
    assert get_metric(m.name).higher_is_better
    assert not get_metric("harness:wikitext:word_perplexity").higher_is_better
    assert parse_harness_metric({"harness": "arc_easy"}).name == "harness:arc_easy:acc"


@pytest.mark.parametrize(("raw", "match"), [
    ({"harness": []}, "non-empty list of task names"),
    ({"harness": ["arc easy"]}, "non-empty list of task names"),
    ({"harness": ["arc_easy"], "kye": "acc"}, r"unknown key `kye` \(did you mean `key`\?\)"),
    ({"harness": ["arc_easy"], "num_fewshot": -1}, "num_fewshot"),
    ({"task": ["arc_easy"]}, "unknown key `task`"),
])
def test_bad_harness_mappings_are_config_errors(raw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_harness_metric(raw)
