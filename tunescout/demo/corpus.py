"""The demo base model's pretraining corpus, over the tasks' vocabulary but none of their formats."""

from __future__ import annotations

import random

from tunescout.demo.vocab import (
    ASPECTS, CITIES, COUNTABLES, DAYS, JOBS, NAMES, NEG_ADJ, NEUTRAL, NEWS_OBJECTS, NEWS_SUBJECTS, NEWS_VERBS,
    PLACES, POS_ADJ, PRODUCTS, SORT_WORDS, SUPPORT, number_words,
)

__all__ = ["demo_pretraining_corpus"]


def _corpus_sentence(rng: random.Random) -> str:
    """One plain sentence over the tasks' vocabulary (their labels and instruction words included,
    so a tokenizer trained on the corpus keeps them whole), never in an instruction/answer format."""
    name, other = rng.sample(NAMES, 2)
    city, day, thing, product = rng.choice(CITIES), rng.choice(DAYS), rng.choice(COUNTABLES), rng.choice(PRODUCTS)
    a, b = rng.randint(0, 60), rng.randint(0, 39)
    subject, (past, present), obj = rng.choice(NEWS_SUBJECTS), rng.choice(NEWS_VERBS), rng.choice(NEWS_OBJECTS)
    words = sorted(rng.sample(SORT_WORDS, 3))
    label, sentiment = rng.choice(sorted(SUPPORT)), rng.choice(("positive", "negative", "neutral"))
    trouble = rng.choice(("invoice", "tracking page", "refund", "password", "subscription", "email address",
                          "card", "money back", "profile", "order"))
    problem = rng.choice(("was charged twice", "got no refund", "could not log in", "wanted to cancel", "waited a week"))
    opinion = rng.choice(("not ", "")) + rng.choice(POS_ADJ + NEG_ADJ)
    return rng.choice((
        f"{name} lives in {city} and works as a {rng.choice(JOBS)} at {rng.choice(PLACES)}.",
        f"{name} bought {a} {thing} at {rng.choice(PLACES)} on {day}.",
        f"{name} moved from {city} to {rng.choice(CITIES)} in {rng.randint(1990, 2024)} with {other}.",
        f"The {product} from {city} was {rng.choice(POS_ADJ + NEG_ADJ + list(NEUTRAL))}, said {name}.",
        f"{a} plus {b} makes {a + b}, and {max(a, b)} minus {min(a, b)} leaves {abs(a - b)}.",
        f"The number {number_words(a)} is written {a}, and {number_words(b)} is written {b}.",
        f"{name} had {a + b} {thing}, gave {b} to {other} and kept {a}.",
        f"Last {day} the {subject} {past} the {obj} in {city}, and the news made a short headline.",
        f"The {subject} often {present} a {obj}, people in {city} say.",
        f"Order {rng.randint(10000, 99999)} with a {product} was shipped to {city} on {day}.",
        f"A customer in {city} sent a message about the {trouble} for a {product}, and {name} read it.",
        f"{name} works on {label} questions at the help desk, where the customer {problem}.",
        f"The words {', '.join(words[:2])} and {words[2]} are in alphabetical order.",
        f"{name} gave the {product} a {sentiment} review, saying {rng.choice(ASPECTS)} was {opinion}.",
        f"{name} read a passage about {other}, a {rng.choice(JOBS)}, and answered each question with words from it.",
        f"{name} sorted the {product}, the {words[0]} and the {words[1]} into boxes.",
    ))


def _recall_paragraph(rng: random.Random) -> str:
    """Two sentences where the second repeats facts of the first, in another order or form.

    Plain facts (:func:`_corpus_sentence`) teach a base model words and what follows what, but
    nothing in them rewards looking back: every sentence is predictable from its own start. Then
    fine-tuning has to grow copying from scratch, and in a few dozen steps it does not (a model
    without it answers every headline or extraction with the same memorised words). Here the end
    of the paragraph is only predictable from its beginning (which city was whose, which number,
    which words), as in real text that names a thing and refers back to it, so pretraining
    learns to find a key earlier in the context and copy what came with it.
    """
    name, other = rng.sample(NAMES, 2)
    city, home = rng.sample(CITIES, 2)
    order, product = rng.randint(10000, 99999), rng.choice(PRODUCTS)
    job, place = rng.choice(JOBS), rng.choice(PLACES)
    subject, (past, present), obj = rng.choice(NEWS_SUBJECTS), rng.choice(NEWS_VERBS), rng.choice(NEWS_OBJECTS)
    words = " ".join(rng.sample(SORT_WORDS + COUNTABLES, rng.randint(2, 4)))
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    return rng.choice((
        f"{name} lives in {city} and {other} lives in {home}. Ask {other} and you hear about {home}, "
        f"ask {name} and you hear about {city}.",
        f"{name} moved from {city} to {home}. Today {name} lives in {home}, far from {city}.",
        f"{name} ordered a {product} from {city}, order {order}. "
        f"The {product} for {name} left {city} as order {order}.",
        f"{name} works as a {job} at {place}. At {place} everyone knows {name}, the {job}.",
        f"On {rng.choice(DAYS)} the {subject} {past} the {obj}. "
        f"The news was short: the {subject} {present} the {obj}.",
        f"{name} wrote down {words}. {other} read it back: {words}.",
        f"{name} has {a} {rng.choice(COUNTABLES)} and {other} has {b}. Together they have {a + b}, "
        f"because {a} plus {b} is {a + b}.",
    ))


def demo_pretraining_corpus(n: int = 4000, seed: int = 0) -> list[str]:
    """``n`` short English-like paragraphs (1-3 sentences) for pretraining the demo base model.

    They use the names, places, numbers and objects of :data:`tunescout.demo.tasks.DEMO_TASKS` but none of their
    instruction formats, so the base model knows the words and some world facts (numbers, order
    of words) before fine-tuning, and a tokenizer trained on them keeps the tasks' words whole,
    while what the fine-tuning teaches (following each instruction format) is still left to learn.
    Four in five paragraphs refer back to their own start (:func:`_recall_paragraph`), the rest
    are one to three independent facts: copying from the context is the skill the extraction,
    QA and headline tasks build on, so most of the corpus exercises it.
    """
    rng = random.Random(f"pretraining-{seed}")
    return [_recall_paragraph(rng) if rng.random() < 0.8 else
            " ".join(_corpus_sentence(rng) for _ in range(rng.randint(1, 3))) for _ in range(n)]
