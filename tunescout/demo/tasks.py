"""Generated instruction data: small tasks, deterministic from a seed, in the three row shapes."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable

__all__ = ["TASKS", "make_rows", "write_jsonl"]

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
