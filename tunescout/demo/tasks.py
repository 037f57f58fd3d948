"""Generated instruction data: small tasks, deterministic from a seed, in the three row shapes.

Two families live here. :data:`TASKS` are the original toy generators used by tests and the
default run; their output is pinned byte for byte, so they are never changed. :data:`DEMO_TASKS`
are the datasets of the embedded study: several task types, each with its metric, train and
eval splits from disjoint random streams. Their words come from :mod:`tunescout.demo.vocab`, which
the pretraining corpus (:mod:`tunescout.demo.corpus`) shares, so a ~1M-parameter model has seen
the words before it is fine-tuned.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tunescout.demo.vocab import (
    ASPECTS, CITIES, COUNTABLES, DAYS, JOBS, NAMES, NEG_ADJ, NEUTRAL, NEWS_OBJECTS, NEWS_SUBJECTS, NEWS_VERBS,
    ONE_WORD_JOBS, PLACES, POS_ADJ, PRODUCTS, SORT_WORDS, SUPPORT,
)

__all__ = [
    "DEMO_TASKS", "DemoTask", "TASKS", "make_rows", "make_task_split",
    "write_demo_datasets", "write_jsonl",
]

_WORDS = ("apple river stone cloud light green blue happy quiet north south east west "
          "paper music garden window market silver orange winter summer").split()
_POSITIVE = ["good", "great", "happy", "lovely", "fine", "nice"]
_NEGATIVE = ["bad", "awful", "sad", "poor", "broken", "dull"]


def _arithmetic(rng: random.Random) -> dict[str, Any]:
    a, b = rng.randint(0, 50), rng.randint(0, 50)
    return {"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                         {"role": "assistant", "content": str(a + b)}]}


def _reverse(rng: random.Random) -> dict[str, Any]:
    words = rng.sample(_WORDS, rng.randint(2, 5))
    return {"prompt": f"Reverse the words: {' '.join(words)}\nAnswer: ", "completion": " ".join(reversed(words))}


def _sentiment(rng: random.Random) -> dict[str, Any]:
    positive = rng.random() < 0.5
    word = rng.choice(_POSITIVE if positive else _NEGATIVE)
    text = f"The {rng.choice(_WORDS)} was {word} today."
    return {"messages": [
        {"role": "system", "content": "Answer with one word: positive or negative."},
        {"role": "user", "content": text},
        {"role": "assistant", "content": "positive" if positive else "negative"}]}


_INTENTS = {
    "billing": ["I was charged twice for the {x}", "why is my invoice for the {x} so high", "can I pay for the {x} by card"],
    "shipping": ["where is my {x}", "my {x} has not arrived yet", "how long does delivery of {x} take"],
    "refund": ["I want my money back for the {x}", "please refund the {x}", "how do I return the {x}"],
    "account": ["I cannot log in to order a {x}", "reset my password, I need my {x}", "change the email on my account"],
}
_ITEMS = ["blue kettle", "order", "headphones", "gift card", "subscription", "desk lamp"]


def _intent(rng: random.Random) -> dict[str, Any]:
    label = rng.choice(sorted(_INTENTS))
    text = rng.choice(_INTENTS[label]).format(x=rng.choice(_ITEMS))
    return {"messages": [
        {"role": "system", "content": "Classify the customer message as billing, shipping, refund or account."},
        {"role": "user", "content": text},
        {"role": "assistant", "content": label}]}


def _story(rng: random.Random) -> dict[str, Any]:
    return {"text": " ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 40))) + "."}


TASKS: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "arithmetic": _arithmetic, "reverse": _reverse, "sentiment": _sentiment, "story": _story,
    "intent": _intent,
}


def make_rows(task: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` rows of a task from :data:`TASKS`, the same for the same seed."""
    rng = random.Random(f"{task}-{seed}")
    return [TASKS[task](rng) for _ in range(n)]


def write_jsonl(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write ``rows`` as JSON lines to ``path`` (parent folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- the demo study's tasks (their words come from tunescout.demo.vocab: why, there) ---


def _chat(system: str | None, user: str, answer: str) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": messages + [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def _as_in_text(answer: str) -> str:
    """An answer copied from the prompt, written with the space it has inside a sentence.

    A byte-level BPE keeps the space in front of a word as part of its token: "Ghent" in
    "lives in Ghent" is one token, but at the start of a turn, after the newline, it has no
    space and becomes other pieces ("G", "hent"). A model with a vocabulary of 1k learns to copy
    a word it has read, not to respell it: with bare answers it wrote a city, but rarely the
    right one ("Shent" for Ghent). With the space, the answer is made of the same tokens as in
    the prompt; the metrics strip it again, as generation does. Real tokenizers learn both
    spellings of each common word; this one has no room for that. In the earlier demo study (4
    epochs, learning rates 1e-3 to 1e-2), bare answers scored at most 0.03 on extraction and 0.13
    on QA; with the space, 0.16 and 0.38.
    """
    return f" {answer}"


def _support_intents(rng: random.Random) -> dict[str, Any]:
    label = rng.choice(sorted(SUPPORT))
    body = rng.choice(SUPPORT[label]).format(
        item=rng.choice(PRODUCTS), order=rng.randint(10000, 99999), amount=rng.randint(5, 99),
        days=rng.randint(2, 20), city=rng.choice(CITIES), day=rng.choice(DAYS), name=rng.choice(NAMES))
    greeting, thanks = rng.choice(("", "Hi. ", "Hello team. ", "Good morning. ")), rng.choice(("", " Thanks.", " Please help."))
    text = greeting + body + thanks
    return _chat("Classify the customer message as billing, shipping, refund, account or cancel.", text, label)


def _review_sentiment(rng: random.Random) -> dict[str, Any]:
    # Negation flips polarity ("not bad" is positive, "not great" negative), so a bag of adjectives
    # is not enough: the model has to read two words together.
    label = rng.choice(("negative", "neutral", "positive"))
    if label == "neutral":
        phrase = rng.choice(NEUTRAL)
    else:
        same, other = (POS_ADJ, NEG_ADJ) if label == "positive" else (NEG_ADJ, POS_ADJ)
        phrase = rng.choice(same) if rng.random() < 0.65 else f"not {rng.choice(other)}"
    opener = rng.choice((f"I bought the {rng.choice(PRODUCTS)} in {rng.choice(CITIES)} last {rng.choice(DAYS)}.",
                         f"My {rng.choice(PRODUCTS)} arrived after {rng.randint(2, 9)} days.",
                         f"This is my review of the {rng.choice(PRODUCTS)}."))
    verdict = f"{rng.choice(ASPECTS + ('it',))} {rng.choice(('was', 'is', 'felt'))} {phrase}."
    review = f"{opener} {rng.choice(('', 'Honestly, ', 'Overall, '))}{verdict}".replace(". it", ". It")
    return _chat("Label the review as positive, negative or neutral.", review, label)


def _order_extraction(rng: random.Random) -> dict[str, Any]:
    # One field, always present and always asked for: the city the order goes to. The message
    # around it varies (four templates, the city in a different place in each) and carries the
    # other fields of an order (name, product, order number, a second number), so the model has
    # to find the one city in the message and copy it. With the question choosing one of those
    # four fields, the best configuration of the demo's grid got 28% of the answers right (full)
    # and 25% (LoRA); asked for the city only, 91% and 100%.
    name, city, product, order, extra = (rng.choice(NAMES), rng.choice(CITIES), rng.choice(PRODUCTS),
                                         rng.randint(10000, 99999), rng.randint(2, 60))
    message = rng.choice((
        f"Hi, this is {name} from {city}. My order {order} with a {product} is {extra} days late.",
        f"Order {order}: the {product} I paid {extra} euros for never reached {city}. Regards, {name}.",
        f"{name} here. Please send the {product} from order {order} to my address in {city} within {extra} days.",
        f"I live in {city} and ordered a {product} {extra} days ago, order {order}. Thanks, {name}.",
    ))
    return {"prompt": f"Message: {message}\nQuestion: Which city is the customer in?\nAnswer:",
            "completion": _as_in_text(city)}


def _passage_qa(rng: random.Random) -> dict[str, Any]:
    # The fact that answers the question plus one or two distractors, in shuffled order; the answer
    # is one word of the passage (a city, a job, a thing), the only word of its kind there, so
    # the question says what kind of word to copy and the passage where it is. With years,
    # counts, two cities (moved from/to) and two-word places to answer as well, the best F1 of
    # the demo's grid was 0.34 (full) and 0.28 (LoRA); with these, 0.62 and 0.44.
    a, b = rng.sample(NAMES, 2)
    city, job, things = rng.choice(CITIES), rng.choice(ONE_WORD_JOBS), rng.choice(COUNTABLES)
    facts = [f"{a} lives in {city}.", f"{a} works as a {job} at {rng.choice(PLACES)}.",
             f"{a}'s friend {b} keeps {rng.randint(2, 40)} {things} at home."]
    fact, question, answer = rng.choice((
        (0, f"Where does {a} live?", city), (1, f"What is {a}'s job?", job),
        (2, f"What does {b} keep at home?", things)))
    others = [f for i, f in enumerate(facts) if i != fact]
    passage = [facts[fact]] + rng.sample(others, rng.randint(1, 2))
    rng.shuffle(passage)
    return _chat("Answer with a word from the passage.", f"Passage: {' '.join(passage)}\nQuestion: {question}",
                 _as_in_text(answer))


def _headline(rng: random.Random) -> dict[str, Any]:
    # The rule to learn: "<subject> <verb, present tense> <object>" from the sentence that carries
    # the news, whichever place it takes in the item and whatever the other sentence says.
    subject, (past, present), obj = rng.choice(NEWS_SUBJECTS), rng.choice(NEWS_VERBS), rng.choice(NEWS_OBJECTS)
    day, city = rng.choice(DAYS), rng.choice(CITIES)
    key = rng.choice((f"The {subject} {past} the {obj} on {day}.", f"On {day}, the {subject} in {city} {past} the {obj}.",
                      f"After a long debate, the {subject} {past} the {obj}."))
    other = rng.choice((f"About {rng.randint(20, 900)} people from {city} came to the meeting.",
                        f"{rng.choice(NAMES)}, a local {rng.choice(JOBS)}, called it {rng.choice(POS_ADJ + NEG_ADJ)}.",
                        f"The weather in {city} was {rng.choice(('cold', 'warm', 'wet', 'sunny'))} all week."))
    story = f"{key} {other}" if rng.random() < 0.7 else f"{other} {key}"
    return _chat(None, f"Write a short headline for this news item.\n{story}",
                 f"{subject.capitalize()} {present} {obj}")


def _arithmetic_words(rng: random.Random) -> dict[str, Any]:
    # Word problems over single digits, written as digits: the sum is one token the base model
    # has seen after "a plus b is" in pretraining, so fine-tuning has to teach reading the two
    # numbers out of a question and answering in the format, not arithmetic itself. Sums and
    # differences up to 99, half of them in words, scored under 0.1 with every configuration of
    # the earlier demo study (4 epochs, a base model that copied little).
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    name, other, things = *rng.sample(NAMES, 2), rng.choice(COUNTABLES)
    question = rng.choice((
        f"{name} has {a} {things} and buys {b} more. How many {things} does {name} have now?",
        f"{name} has {a} {things} and {other} gives {name} {b} more. How many {things} does {name} have?",
        f"{name} keeps {a} {things} at home and {b} at work. How many {things} is that in all?",
    ))
    return {"prompt": f"Question: {question}\nAnswer with a number:", "completion": _as_in_text(str(a + b))}


def _sort_words(rng: random.Random) -> dict[str, Any]:
    words = rng.sample(SORT_WORDS, rng.randint(3, 5))
    return _chat("Reply with the words in alphabetical order, separated by spaces.",
                 f"Sort these words alphabetically: {', '.join(words)}", " ".join(sorted(words)))


_METRIC_NAMES = ("accuracy", "exact_match", "f1", "rougeL")
"""Generation metrics of :mod:`tunescout.evaluate.metrics` (checked against its registry in the
tests; not imported here because ``tunescout.evaluate`` pulls in torch)."""


@dataclass(frozen=True)
class DemoTask:
    """One generated dataset of the demo study: how to make a row and how to score answers."""

    name: str
    """File stem and dataset name in the study (``<name>_train.jsonl``)."""
    task_type: str
    """classification, extraction, qa, summarization, arithmetic or transformation: the axis the
    study's held-out validation groups datasets by."""
    metric: str
    """Name in the metric registry: accuracy, exact_match, f1 or rougeL."""
    make: Callable[[random.Random], dict[str, Any]]
    """One row (messages or prompt/completion) from the random stream; all randomness from ``rng``."""
    max_new_tokens: int
    """Greedy-generation budget at evaluation: the longest answer in tokens plus end of turn, with room."""
    labels: tuple[str, ...] = ()
    """The closed label set of a classification task (empty otherwise)."""

    def __post_init__(self) -> None:
        if self.metric not in _METRIC_NAMES:
            raise ValueError(f"task {self.name!r}: metric {self.metric!r} is not one of {_METRIC_NAMES}")
        if not 1 <= self.max_new_tokens <= 64:
            raise ValueError(f"task {self.name!r}: max_new_tokens must be in 1..64, got {self.max_new_tokens}")
        if self.labels and self.task_type != "classification":
            raise ValueError(f"task {self.name!r}: only classification tasks have labels")


DEMO_TASKS: dict[str, DemoTask] = {t.name: t for t in (
    DemoTask("support-intents", "classification", "accuracy", _support_intents, 6, tuple(sorted(SUPPORT))),
    DemoTask("review-sentiment", "classification", "accuracy", _review_sentiment, 6, ("negative", "neutral", "positive")),
    DemoTask("order-extraction", "extraction", "exact_match", _order_extraction, 8),
    DemoTask("passage-qa", "qa", "f1", _passage_qa, 8),
    DemoTask("headline", "summarization", "rougeL", _headline, 12),
    DemoTask("arithmetic-words", "arithmetic", "exact_match", _arithmetic_words, 6),
    DemoTask("sort-words", "transformation", "exact_match", _sort_words, 12),
)}
"""The embedded study's datasets by name, one or more per task type."""


def _question_key(row: dict[str, Any]) -> str:
    """Everything a row shows the model before the answer: the same question in train and eval is a leak."""
    if "messages" in row:
        return json.dumps(row["messages"][:-1], sort_keys=True)
    return row["prompt"]


def make_task_split(
    task_name: str, n_train: int, n_eval: int, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train and eval rows of a :data:`DEMO_TASKS` task, the same for the same seed.

    The splits come from two independent random streams (so changing ``n_train`` changes which
    eval rows are filtered out, never what the eval stream draws), and eval rows whose question
    also appears in train, or earlier in eval, are skipped: an eval score then measures
    generalisation, not recall.

    Raises:
        ValueError: unknown task, negative sizes, or a task too small to give ``n_eval`` unseen questions.
    """
    if task_name not in DEMO_TASKS:
        raise ValueError(f"unknown demo task {task_name!r} (known: {', '.join(DEMO_TASKS)})")
    if n_train < 0 or n_eval < 0:
        raise ValueError(f"n_train and n_eval must be >= 0, got {n_train} and {n_eval}")
    make = DEMO_TASKS[task_name].make
    train_rng, eval_rng = random.Random(f"{task_name}-{seed}-train"), random.Random(f"{task_name}-{seed}-eval")
    train = [make(train_rng) for _ in range(n_train)]
    seen = {_question_key(r) for r in train}
    evals: list[dict[str, Any]] = []
    for _ in range(20 * n_eval + 100):
        if len(evals) == n_eval:
            break
        row = make(eval_rng)
        key = _question_key(row)
        if key not in seen:
            seen.add(key)
            evals.append(row)
    if len(evals) < n_eval:
        raise ValueError(f"{task_name}: only {len(evals)} of {n_eval} eval questions unseen in {n_train} train rows")
    return train, evals


def write_demo_datasets(out_dir: str | Path, n_train: int = 512, n_eval: int = 64, seed: int = 0,
                        tasks: list[str] | None = None) -> list[dict[str, Any]]:
    """Write ``<name>_train.jsonl`` and ``<name>_eval.jsonl`` for each demo task into ``out_dir``.

    Args:
        tasks: names from :data:`DEMO_TASKS` (default: all of them, in registry order).

    Returns:
        One study dataset entry per task: ``{name, train, eval, metric, task_type, max_new_tokens}``,
        with paths relative to ``out_dir`` so the folder can be moved along with its study YAML.
    """
    out = Path(out_dir)
    entries = []
    for name in tasks if tasks is not None else list(DEMO_TASKS):
        train, evals = make_task_split(name, n_train, n_eval, seed)
        write_jsonl(train, out / f"{name}_train.jsonl")
        write_jsonl(evals, out / f"{name}_eval.jsonl")
        task = DEMO_TASKS[name]
        entries.append({"name": name, "train": f"{name}_train.jsonl", "eval": f"{name}_eval.jsonl",
                        "metric": task.metric, "task_type": task.task_type, "max_new_tokens": task.max_new_tokens})
    return entries

