"""Rows → (prompt, reference) pairs, and evaluate_task end to end: a model that learned a task scores high."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tunescout.config import DataSource, TrainConfig
from tunescout.data.formats import DataError, normalise_row, read_examples
from tunescout.demo.tasks import write_jsonl
from tunescout.evaluate import EvalItem, build_eval_items, evaluate_task
from tunescout.train import train

WORDS = "alpha beta gamma delta apple river stone cloud light green blue red north south east west".split()


def _ex(row: dict, where: str = "eval.jsonl:7"):
    return normalise_row(row, where)


def test_chat_prompt_is_everything_before_the_last_assistant_turn() -> None:
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"}]
    [item] = build_eval_items([_ex({"messages": chat})], use_chat=True)
    assert item == EvalItem(chat[:4], "4")
    prompt, reference = item  # a plain pair
    assert reference == "4" and prompt[-1] == {"role": "user", "content": "2+2?"}


def test_prompt_completion_is_a_one_turn_chat_or_the_raw_string() -> None:
    ex = _ex({"prompt": "Reverse: a b\nAnswer: ", "completion": "b a"})
    assert build_eval_items([ex], use_chat=True) == [EvalItem([{"role": "user", "content": "Reverse: a b\nAnswer: "}], "b a")]
    assert build_eval_items([ex], use_chat=False) == [EvalItem("Reverse: a b\nAnswer: ", "b a")]


@pytest.mark.parametrize(("row", "match"), [
    ({"text": "just some prose"}, r"eval.jsonl:7: a `text` row has no prompt and answer"),
    ({"messages": [{"role": "user", "content": "hello?"}]}, r"eval.jsonl:7: chat has no assistant turn"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, r"eval.jsonl:7: chat opens with the assistant"),
])
def test_rows_that_are_not_tasks_are_errors_naming_the_row(row, match) -> None:
    with pytest.raises(DataError, match=match):
        build_eval_items([_ex({"prompt": "fine", "completion": "row"}), _ex(row)], use_chat=True)


def _yes_rows(n: int, seed: int) -> list[dict]:
    """A task a tiny model learns in a few dozen steps: whatever the words, the answer is 'yes'."""
    rng = random.Random(seed)
    return [{"messages": [{"role": "user", "content": "Repeat: " + " ".join(rng.sample(WORDS, rng.randint(1, 4)))},
                          {"role": "assistant", "content": "yes"}]} for _ in range(n)]


@pytest.fixture(scope="module")
def yes_task(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict:
    root = tmp_path_factory.mktemp("yes")
    train_file = write_jsonl(_yes_rows(64, seed=0), root / "train.jsonl")
    cfg = TrainConfig.of(model=str(tiny_model_dir), data=[DataSource(str(train_file))], batch_size=8, epochs=3,
                      max_tokens_per_micro_batch=512, max_length=64, learning_rate=2e-3, output_dir=str(root / "run"),
                      progress=False, device="cpu")
    result = train(cfg)
    assert result.status == "completed"
    held_out = read_examples(str(write_jsonl(_yes_rows(24, seed=1), root / "eval.jsonl")))
    return {"trained": root / "run" / "model", "examples": held_out}


def _load(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def test_trained_model_scores_high_and_untrained_low(yes_task, tiny_model_dir) -> None:
    model, tokenizer = _load(yes_task["trained"])
    trained = evaluate_task(model, tokenizer, yes_task["examples"], "exact_match", max_new_tokens=4, batch_size=8)
    assert trained["metric"] == "exact_match" and trained["n"] == 24
    assert trained["score"] >= 0.9, trained["predictions"]
    base, base_tokenizer = _load(tiny_model_dir)
    untrained = evaluate_task(base, base_tokenizer, yes_task["examples"], "exact_match", max_new_tokens=4)
    assert untrained["score"] < 0.5, untrained["predictions"]


def test_result_shape_limit_and_prediction_cap(yes_task) -> None:
    model, tokenizer = _load(yes_task["trained"])
    out = evaluate_task(model, tokenizer, yes_task["examples"], "rougeL", max_new_tokens=2, batch_size=16)
    assert set(out) == {"metric", "score", "n", "predictions"}
    assert out["metric"] == "rougeL" and out["n"] == 24 and len(out["predictions"]) == 20
    assert isinstance(out["score"], float) and 0.0 <= out["score"] <= 1.0
    limited = evaluate_task(model, tokenizer, yes_task["examples"], "accuracy", max_new_tokens=2, limit=5)
    assert limited["n"] == 5 and len(limited["predictions"]) == 5


@pytest.mark.parametrize(("metric", "kwargs", "match"), [
    ("val_loss", {}, "not computed from generated text"),
    ("exactmatch", {}, "did you mean 'exact_match'"),
    ("f1", {"limit": 0}, "limit must be >= 1"),
])
def test_bad_requests_fail_before_generating(yes_task, tiny_model_dir, metric, kwargs, match) -> None:
    model, tokenizer = _load(tiny_model_dir)
    with pytest.raises(ValueError, match=match):
        evaluate_task(model, tokenizer, yes_task["examples"], metric, **kwargs)


def test_no_examples_is_an_error(tiny_model_dir) -> None:
    model, tokenizer = _load(tiny_model_dir)
    with pytest.raises(ValueError, match="no examples"):
        evaluate_task(model, tokenizer, [], "f1")
