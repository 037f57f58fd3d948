"""Task metrics on hand-computed cases, and the registry's errors."""

from __future__ import annotations

import itertools
import random

import pytest

from tunescout.evaluate import metrics
from tunescout.evaluate.metrics import METRICS, Metric, accuracy, exact_match, f1, get_metric, register_metric, rouge_l

GENERATION = [accuracy, exact_match, f1, rouge_l]


def test_rouge_l_by_hand() -> None:
    # LCS('the cat sat on the mat', 'the cat on the mat') = 5 tokens: P = 5/6, R = 5/5,
    # F = 2 * 5/6 * 1 / (5/6 + 1) = 10/11.
    assert rouge_l(["the cat sat on the mat"], ["the cat on the mat"]) == pytest.approx(10 / 11)
    # 'a b c d' vs 'a c b d': LCS 3 (a b d), P = R = 3/4.
    assert rouge_l(["a b c d"], ["a c b d"]) == pytest.approx(0.75)
    # Lowercased, but split on whitespace only: 'Mat.' is not 'mat' (5 of 6 tokens shared).
    assert rouge_l(["The Cat sat on the Mat."], ["the cat sat on the mat"]) == pytest.approx(5 / 6)
    assert rouge_l(["x y z"], ["a b c"]) == 0.0


def _lcs_table(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, j in itertools.product(range(len(a)), range(len(b))):
        table[i + 1][j + 1] = table[i][j] + 1 if a[i] == b[j] else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def test_lcs_matches_the_textbook_table() -> None:
    rng = random.Random(0)
    for _ in range(300):
        a = rng.choices("abcd", k=rng.randint(0, 12))
        b = rng.choices("abcd", k=rng.randint(0, 12))
        assert metrics._lcs_length(a, b) == _lcs_table(a, b), (a, b)


def test_f1_partial_overlap() -> None:
    # Normalised: [cat, sat] vs [cat, sat, down]: P = 1, R = 2/3, F1 = 0.8.
    assert f1(["The cat sat."], ["a cat sat down"]) == pytest.approx(0.8)
    # Bag of tokens, counted: one 'cat' of three matches. P = 1/3, R = 1, F1 = 0.5.
    assert f1(["cat cat cat"], ["cat"]) == pytest.approx(0.5)
    # Mean over examples: (0.8 + 0) / 2.
    assert f1(["the cat sat", "dog"], ["a cat sat down", "bird"]) == pytest.approx(0.4)


def test_exact_match_normalisation() -> None:
    assert exact_match(["The  Cat!"], ["cat"]) == 1.0
    assert exact_match(["an apple."], ["Apple"]) == 1.0
    assert exact_match(["Paris, France"], ["paris france"]) == 1.0
    assert exact_match(["cats"], ["cat"]) == 0.0
    assert exact_match(["theater"], ["ater"]) == 0.0  # articles are whole words only
    assert exact_match(["yes", "no", "yes", "maybe"], ["yes", "yes", "Yes.", "no"]) == 0.5


def test_accuracy_compares_labels_case_insensitively_on_the_first_line() -> None:
    assert accuracy(["Positive."], ["positive"]) == 1.0
    assert accuracy(["  NEGATIVE \nbecause the text says sad"], ["negative"]) == 1.0
    assert accuracy(["positive review"], ["positive"]) == 0.0
    assert accuracy(["\n\npositive"], ["positive"]) == 1.0  # leading blank lines are stripped first
    assert accuracy(["the billing team"], ["billing team"]) == 0.0  # no article removal, unlike exact_match
    assert accuracy(["refund", "billing", "account"], ["refund", "shipping", "Account"]) == pytest.approx(2 / 3)


def test_multiple_references_take_the_best() -> None:
    assert f1(["blue house"], [["red house", "blue house"]]) == 1.0
    assert f1(["blue house"], [["red house", "green car"]]) == pytest.approx(0.5)
    assert exact_match(["NYC"], [["New York", "nyc"]]) == 1.0
    assert accuracy(["pos"], [("positive", "pos")]) == 1.0
    assert rouge_l(["the cat"], [["a dog", "the cat sat"]]) == pytest.approx(0.8)  # P 1, R 2/3


@pytest.mark.parametrize("fn", GENERATION, ids=lambda fn: fn.__name__)
def test_empty_prediction_scores_zero_and_identical_scores_one(fn) -> None:
    assert fn([""], ["the answer is 42"]) == 0.0
    assert fn(["   "], ["yes"]) == 0.0
    assert fn(["the answer is 42"], ["the answer is 42"]) == 1.0
    assert fn(["a b", "c"], ["a b", "c"]) == 1.0


@pytest.mark.parametrize("fn", GENERATION, ids=lambda fn: fn.__name__)
def test_scores_stay_in_unit_interval(fn) -> None:
    rng = random.Random(1)
    words = "the a cat dog sat on mat . , yes no".split()
    for _ in range(50):
        preds = [" ".join(rng.choices(words, k=rng.randint(0, 8))) for _ in range(3)]
        refs = [" ".join(rng.choices(words, k=rng.randint(1, 8))) for _ in range(3)]
        assert 0.0 <= fn(preds, refs) <= 1.0


@pytest.mark.parametrize("fn", GENERATION, ids=lambda fn: fn.__name__)
def test_bad_inputs_are_errors(fn) -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        fn(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no examples"):
        fn([], [])
    with pytest.raises(ValueError, match="empty list of references"):
        fn(["a"], [[]])
    with pytest.raises(TypeError, match="lists"):
        fn("a", "a")


def test_registry_names_and_directions() -> None:
    assert {"accuracy", "exact_match", "f1", "rougeL", "val_loss"} <= set(METRICS)
    assert get_metric("rougeL").fn is rouge_l
    assert all(get_metric(n).higher_is_better and get_metric(n).is_generation
               for n in ("accuracy", "exact_match", "f1", "rougeL"))
    val_loss = get_metric("val_loss")
    assert val_loss.fn is None and not val_loss.higher_is_better and not val_loss.is_generation


@pytest.mark.parametrize(("name", "closest"), [("rougel", "rougeL"), ("exact-match", "exact_match"), ("acc", "accuracy")])
def test_unknown_metric_names_the_closest_and_all_known(name, closest) -> None:
    with pytest.raises(ValueError) as err:
        get_metric(name)
    message = str(err.value)
    assert f"unknown metric {name!r}" in message and f"did you mean {closest!r}" in message
    assert all(known in message for known in ("accuracy", "exact_match", "f1", "rougeL", "val_loss"))


def test_unknown_metric_with_no_close_match_still_lists_known() -> None:
    with pytest.raises(ValueError, match=r"unknown metric 'bleurt' \(known: accuracy, ") as err:
        get_metric("bleurt")
    assert "did you mean" not in str(err.value)


def test_register_validates(monkeypatch) -> None:
    monkeypatch.setattr(metrics, "METRICS", dict(METRICS))  # keep the real registry untouched
    with pytest.raises(ValueError, match="already registered"):
        register_metric(Metric("f1", exact_match))
    with pytest.raises(ValueError, match="must start with a letter"):
        register_metric(Metric("my metric", exact_match))
    with pytest.raises(ValueError, match="callable"):
        register_metric(Metric("broken", "not a function"))  # type: ignore[arg-type]
    length = register_metric(Metric("length_ratio", lambda p, r: 0.5))
    assert metrics.get_metric("length_ratio") is length
    register_metric(Metric("f1", exact_match), replace=True)
    assert get_metric("f1").fn is exact_match  # get_metric reads the module's (patched) registry
