"""Metric honesty: tunescout's exact match, token F1 and ROUGE-L against independent implementations.

The SQuAD rules are written out again here from the official evaluation script's description
(lowercase, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace; F1 over the
bag of normalised tokens; the best score over an example's references), without importing
anything from tunescout. ROUGE-L is checked against Google's ``rouge-score`` package.
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter

import pytest

from tunescout.evaluate.metrics import exact_match, f1, rouge_l

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")


def squad_normalize(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def squad_f1(prediction: str, truth: str) -> float:
    pred, gold = squad_normalize(prediction).split(), squad_normalize(truth).split()
    if len(pred) == 0 or len(gold) == 0:  # SQuAD v2.0: both empty agree, one empty scores 0
        return float(pred == gold)
    common = Counter(pred) & Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    p, r = same / len(pred), same / len(gold)
    return 2 * p * r / (p + r)


def squad_em(prediction: str, truth: str) -> float:
    return float(squad_normalize(prediction) == squad_normalize(truth))


WORDS = ["the", "The", "a", "An", "an", "cat", "Cat.", "sat", "on", "mat", "mat!", "dog's", "dogs", "Paris",
         "paris,", "1", "1.5", "two", "(two)", "--", "—", "théâtre", "Théâtre", "naïve", "x-ray", "x ray", "", "  ",
         "\t", "anthem", "theory", "a.", "U.S.", "us"]


def _text(rng: random.Random) -> str:
    return rng.choice([" ", "  ", "\t", "\n"]).join(rng.choice(WORDS) for _ in range(rng.randint(0, 7)))


def test_exact_match_and_f1_follow_the_squad_rules_on_random_text() -> None:
    rng = random.Random(0)
    for _ in range(3000):
        prediction = _text(rng)
        refs = [_text(rng) for _ in range(rng.randint(1, 3))]
        assert exact_match([prediction], [refs]) == max(squad_em(prediction, r) for r in refs), (prediction, refs)
        assert f1([prediction], [refs]) == pytest.approx(max(squad_f1(prediction, r) for r in refs)), (prediction, refs)


def test_means_over_examples() -> None:
    preds = ["The Cat sat.", "paris", "nothing"]
    refs = [["a cat sat"], ["Paris", "France"], ["something else"]]
    assert exact_match(preds, refs) == pytest.approx((1 + 1 + 0) / 3)
    assert f1(preds, refs) == pytest.approx(sum(max(squad_f1(p, r) for r in rs) for p, rs in zip(preds, refs)) / 3)


class WhitespaceTokenizer:
    """rouge-score's tokenizer interface with tunescout's rule: lowercase, split on whitespace only."""

    def tokenize(self, text: str) -> list[str]:
        return text.lower().split()


def test_rouge_l_equals_rouge_score_with_the_same_tokens() -> None:
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=WhitespaceTokenizer())
    rng = random.Random(1)
    for _ in range(2000):
        prediction, reference = _text(rng), _text(rng)
        if not prediction.split() or not reference.split():
            continue  # empty texts: see the next test
        expected = scorer.score(reference, prediction)["rougeL"].fmeasure
        assert rouge_l([prediction], [reference]) == pytest.approx(expected), (prediction, reference)


def test_rouge_l_equals_rouge_score_defaults_on_plain_lowercase_words() -> None:
    """Where the tokenisations agree (lowercase letters and digits between spaces), so do the scores;
    rouge-score's default tokenizer also drops punctuation and non-ASCII letters, tunescout keeps them."""
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rng = random.Random(2)
    vocab = "the cat sat on mat dog ran far 1 2 three".split()
    for _ in range(2000):
        prediction = " ".join(rng.choices(vocab, k=rng.randint(1, 9)))
        references = [" ".join(rng.choices(vocab, k=rng.randint(1, 9))) for _ in range(rng.randint(1, 3))]
        best = max(scorer.score(r, prediction)["rougeL"].fmeasure for r in references)
        assert rouge_l([prediction], [references]) == pytest.approx(best)
    # the documented difference: punctuation stays on the token
    assert scorer.score("the cat sat on the mat", "The cat sat on the mat.")["rougeL"].fmeasure == 1.0
    assert rouge_l(["The cat sat on the mat."], ["the cat sat on the mat"]) == pytest.approx(5 / 6)


def test_empty_texts_follow_the_squad_convention() -> None:
    # rouge-score gives 0 when either side is empty; tunescout, like SQuAD v2.0's F1, scores two
    # empty answers as agreeing (a model that correctly answers nothing is not penalised).
    assert rouge_l([""], [""]) == 1.0 and f1([""], [""]) == 1.0 and exact_match([""], [""]) == 1.0
    assert rouge_l(["x"], [""]) == 0.0 and f1([""], ["x"]) == 0.0
