"""The demo study's generated datasets: deterministic, well-formed, leak-free, balanced, learnable sizes."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tunescout.data.formats import normalise_row, read_examples
from tunescout.demo.corpus import demo_pretraining_corpus
from tunescout.demo.tasks import (
    DEMO_TASKS,
    TASKS,
    DemoTask,
    make_rows,
    make_task_split,
    write_demo_datasets,
)
from tunescout.evaluate.metrics import get_metric

# sha256 of write_jsonl's bytes for make_rows(name, 20, seed=0), taken before DEMO_TASKS was added:
# tests and shipped files depend on these rows byte for byte.
LEGACY_HASHES = {
    "arithmetic": "f0371217347b4def54f03d9c12b8836728e51764abf016d8739444bcf33016a9",
    "reverse": "c7b7c4ba361ab38d2f8979154127434bed04947cf2ff78c548635b0e441bb15a",
    "sentiment": "8b6576bf0f8e96fb26af5f0e88b20e456bc49446a556d9e925924ae31da59f94",
    "story": "d8a94a04e2cbf994d98e8cfe9e227168361f85dee77ad80c44e31fa272a9a5b8",
    "intent": "2c5aaec096c0cbdc9ade274ef43dbd8dc167ff0147ec875cd4d0643244e85013",
}


def _answer(row: dict[str, Any]) -> str:
    return row["messages"][-1]["content"] if "messages" in row else row["completion"]


def _question(row: dict[str, Any]) -> str:
    return json.dumps(row["messages"][:-1]) if "messages" in row else row["prompt"]


@pytest.fixture(scope="module")
def splits() -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    return {name: make_task_split(name, 400, 200, seed=0) for name in DEMO_TASKS}


@pytest.mark.parametrize("name", sorted(LEGACY_HASHES))
def test_legacy_tasks_are_unchanged(name: str) -> None:
    data = "".join(json.dumps(r) + "\n" for r in make_rows(name, 20, seed=0)).encode()
    assert hashlib.sha256(data).hexdigest() == LEGACY_HASHES[name]
    assert set(TASKS) == set(LEGACY_HASHES)


def test_registry_spans_task_types_metrics_and_shapes(splits) -> None:
    assert len(DEMO_TASKS) >= 6
    assert not set(DEMO_TASKS) & set(TASKS), "demo tasks must not shadow the legacy task names"
    assert len({t.task_type for t in DEMO_TASKS.values()}) >= 4
    for name, task in DEMO_TASKS.items():
        assert task.name == name
        assert get_metric(task.metric).is_generation
        assert 1 <= task.max_new_tokens <= 12
    assert len({t.metric for t in DEMO_TASKS.values()}) == 4
    shapes = Counter("messages" if "messages" in train[0] else "prompt" for train, _ in splits.values())
    assert shapes["messages"] > shapes["prompt"] >= 1


def test_demo_task_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="metric"):
        DemoTask("x", "qa", "bleu", lambda rng: {}, 8)
    with pytest.raises(ValueError, match="labels"):
        DemoTask("x", "qa", "f1", lambda rng: {}, 8, labels=("a", "b"))


def test_write_demo_datasets_is_deterministic_and_returns_study_entries(tmp_path: Path) -> None:
    first = write_demo_datasets(tmp_path / "a", n_train=64, n_eval=16, seed=0)
    again = write_demo_datasets(tmp_path / "b", n_train=64, n_eval=16, seed=0)
    other = write_demo_datasets(tmp_path / "c", n_train=64, n_eval=16, seed=1)
    assert first == again == other
    assert [e["name"] for e in first] == list(DEMO_TASKS)
    for entry in first:
        task = DEMO_TASKS[entry["name"]]
        assert entry == {"name": task.name, "train": f"{task.name}_train.jsonl", "eval": f"{task.name}_eval.jsonl",
                         "metric": task.metric, "task_type": task.task_type, "max_new_tokens": task.max_new_tokens}
        for split, n in (("train", 64), ("eval", 16)):
            a, b, c = (tmp_path / d / entry[split] for d in "abc")
            assert a.read_bytes() == b.read_bytes()
            assert a.read_bytes() != c.read_bytes()
            assert len(read_examples(str(a))) == n


def test_every_row_normalises(splits) -> None:
    for name, (train, evals) in splits.items():
        for i, row in enumerate(train + evals):
            ex = normalise_row(row, f"{name}[{i}]")
            assert ex.kind in ("messages", "prompt_completion")
            if ex.kind == "messages":
                assert ex.messages[-1]["role"] == "assistant" and ex.messages[-2]["role"] == "user"


def test_eval_questions_are_unseen_in_train_and_unique(splits) -> None:
    for name, (train, evals) in splits.items():
        assert len(evals) == 200
        eval_questions = [_question(r) for r in evals]
        assert len(set(eval_questions)) == len(evals), name
        assert not set(eval_questions) & {_question(r) for r in train}, name


def test_split_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown demo task"):
        make_task_split("no-such-task", 1, 1)
    constant = {"prompt": "Q: ", "completion": "A"}
    monkeypatch.setitem(DEMO_TASKS, "constant", DemoTask("constant", "qa", "f1", lambda rng: dict(constant), 4))
    with pytest.raises(ValueError, match="unseen"):
        make_task_split("constant", 1, 1)


def test_classification_labels_are_balanced(splits) -> None:
    classifiers = [t for t in DEMO_TASKS.values() if t.task_type == "classification"]
    assert len(classifiers) >= 2
    for task in classifiers:
        assert len(task.labels) >= 3
        for rows in splits[task.name]:
            counts = Counter(_answer(r) for r in rows)
            assert set(counts) == set(task.labels), task.name
            assert max(counts.values()) / len(rows) <= 0.6, (task.name, counts)


def test_review_sentiment_uses_negation(splits) -> None:
    rows = splits["review-sentiment"][0]
    negated = Counter(_answer(r) for r in rows if " not " in r["messages"][1]["content"])
    assert negated["positive"] > 0 and negated["negative"] > 0


def test_answers_are_short(splits) -> None:
    for name, (train, evals) in splits.items():
        for row in train + evals:
            assert 1 <= len(_answer(row).split()) <= 8, (name, row)


def test_reference_scores_one_and_a_wrong_answer_less(splits) -> None:
    for name, (train, _) in splits.items():
        fn = get_metric(DEMO_TASKS[name].metric).fn
        refs = [_answer(r) for r in train[:50]]
        assert fn(refs, refs) == 1.0, name
        # Each reference against the next different answer in the split: never a perfect score.
        wrong = [next(a for a in refs[i + 1:] + refs[:i] if a.lower() != ref.lower()) for i, ref in enumerate(refs)]
        assert fn(wrong, refs) < 1.0, name
        assert fn(["zzz"] * len(refs), refs) == 0.0, name


def test_passage_qa_answers_are_spans_of_the_passage(splits) -> None:
    train, evals = splits["passage-qa"]
    for row in train + evals:
        passage = row["messages"][1]["content"].split("\nQuestion:")[0]
        assert passage.startswith("Passage: ") and 2 <= passage.count(". ") + 1 <= 3
        assert _answer(row) in passage


def test_rule_based_answers_follow_their_rule(splits) -> None:
    for row in splits["sort-words"][0]:
        words = row["messages"][-2]["content"].split(": ", 1)[1].split(", ")
        assert _answer(row) == " ".join(sorted(words))
    for row in splits["headline"][0]:
        story, headline = row["messages"][0]["content"].lower(), _answer(row).lower().split()
        assert 3 <= len(headline) <= 6
        assert " ".join(headline[:2]) in story and " ".join(headline[-2:]) in story
    for row in splits["arithmetic-words"][0]:
        digits = [int(w) for w in row["prompt"].replace("?", " ").replace(".", " ").split() if w.isdigit()]
        assert len(digits) == 2 and all(0 <= d <= 9 for d in digits) and int(_answer(row)) == sum(digits)
    for row in splits["order-extraction"][0]:
        message, question = row["prompt"].split("\nQuestion:")
        assert len(_answer(row).split()) == 1 and message.count(_answer(row)) == 1
        assert question == " Which city is the customer in?\nAnswer:"
    for row in splits["passage-qa"][0]:
        assert len(_answer(row).split()) == 1


@pytest.fixture(scope="module")
def bpe() -> Any:
    """A ~1k-token byte-level BPE trained on the pretraining corpus, as the demo builds it."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(demo_pretraining_corpus(4000, seed=0), trainer=trainer)
    return tokenizer


def test_rows_fit_a_small_bpe_tokenizer(splits, bpe) -> None:
    """Rows stay at ~20-80 tokens and answers, plus end of turn, fit the task's max_new_tokens."""
    for name, (train, _) in splits.items():
        for row in train[:200]:
            text = "\n".join(m["content"] for m in row["messages"]) if "messages" in row else row["prompt"] + row["completion"]
            assert 15 <= len(bpe.encode(text).ids) <= 80, (name, text)
            assert len(bpe.encode(_answer(row)).ids) + 1 <= DEMO_TASKS[name].max_new_tokens, (name, _answer(row))


@pytest.mark.parametrize("name", ["order-extraction", "passage-qa"])
def test_copied_answers_are_the_prompts_tokens(splits, bpe, name: str) -> None:
    """An answer copied from the prompt is spelled as inside it, so the model can copy tokens: at
    the start of a turn, after the newline, the answer tokenises exactly as where it was read."""
    for row in splits[name][0][:200]:
        prompt = row["messages"][-2]["content"] if "messages" in row else row["prompt"]
        turn_start = bpe.encode("\n" + _answer(row)).ids[1:]
        ids = bpe.encode(prompt).ids
        assert any(ids[i:i + len(turn_start)] == turn_start for i in range(len(ids))), (name, row)


def test_most_of_the_corpus_refers_back_to_its_start() -> None:
    """Copying from the context is learnt in pretraining: most paragraphs repeat, after their
    first sentence, a name, place, number or word that the first sentence introduced."""
    corpus = demo_pretraining_corpus(2000, seed=0)
    refer_back = 0
    for paragraph in corpus:
        first, _, rest = paragraph.partition(". ")
        words = set(first.replace(",", " ").split()) - {"the", "a", "and", "at", "in", "to", "of", "from", "is"}
        refer_back += bool(words & set(rest.replace(",", " ").replace(".", " ").split()))
    assert refer_back / len(corpus) >= 0.75


def test_pretraining_corpus_is_deterministic_plain_text_over_the_task_vocabulary() -> None:
    corpus = demo_pretraining_corpus(2000, seed=0)
    assert corpus == demo_pretraining_corpus(2000, seed=0)
    assert corpus != demo_pretraining_corpus(2000, seed=1)
    assert len(corpus) == 2000 and all(line and "\n" not in line for line in corpus)
    joined = " ".join(corpus)
    for marker in ("Question:", "Answer", "Passage:", "Message:", "Classify", "Sort these", "Label the"):
        assert marker not in joined
    words = set(joined.replace(",", " ").replace(".", " ").split())
    for task in DEMO_TASKS.values():
        assert set(task.labels) <= words


def test_generation_is_fast() -> None:
    for name, task in DEMO_TASKS.items():
        rng = random.Random(0)
        start = time.perf_counter()
        for _ in range(1000):
            task.make(rng)
        assert time.perf_counter() - start < 1.0, name
