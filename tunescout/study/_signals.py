"""What the stopping rules compute, apart from the rules themselves: where rungs and windows lie
in samples, the recipe's early-dynamics signals, and the rank arithmetic of "keep the best 1/eta".

Private: import these from :mod:`tunescout.study.stopping`, which re-exports the public ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tunescout.study.stopping import TrialProgress

__all__ = ["dynamics_scores", "keep_count", "rung_samples", "window_start", "window_stats"]


# --- numbers, rungs and windows --------------------------------------------------------------


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)  # YAML `true` is not a number


def _finite(x: object) -> bool:
    return _is_number(x) and math.isfinite(x)  # type: ignore[arg-type]


def _mean(xs: Sequence[float]) -> float | None:
    # fsum: a mean must not depend on summation order, or equal levels could fail to tie.
    return math.fsum(xs) / len(xs) if xs else None


def rung_samples(fraction: float, planned_samples: int) -> int:
    """Samples at which a fraction of training (a rung) is reached, rounded up.

    The product is rounded first so that 0.07 * 100 (= 7.000000000000001 in binary) is rung 7,
    not 8. Every rule and every analysis of a rung's window rounds through this function.
    """
    return max(1, math.ceil(round(fraction * planned_samples, 6)))


def keep_count(n: int, eta: float) -> int:
    """How many of ``n`` trials survive a rung: the best ceil(n / eta), at least one."""
    return max(1, math.ceil(round(n / eta, 9)))


def _latest_and_previous(telemetry: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """Samples at the latest record and at the one before (0 before the first record)."""
    now = telemetry[-1]["samples"]
    before = telemetry[-2]["samples"] if len(telemetry) > 1 else 0
    return now, before


def window_start(fraction: float, window: float | None, planned_samples: int) -> float:
    """Samples after which the window judged at ``fraction`` starts: 0 when ``window`` is None
    (from the start of training), else ``fraction - window`` of planned samples."""
    return 0.0 if window is None else max(0.0, round((fraction - window) * planned_samples, 6))


# --- ranks --------------------------------------------------------------------------------


def _average_ranks(values: Mapping[str, float | None], higher_is_better: bool) -> dict[str, float]:
    """Rank 1 = best; ties share the average of their positions; missing values tie for worst."""
    finite = sorted((v, k) for k, v in values.items() if v is not None)
    if higher_is_better:
        finite.reverse()
    ranks: dict[str, float] = {}
    i = 0
    while i < len(finite):
        j = i
        while j < len(finite) and finite[j][0] == finite[i][0]:
            j += 1
        for _, key in finite[i:j]:
            ranks[key] = i + (j - i + 1) / 2  # positions i+1 .. j
        i = j
    missing = [k for k, v in values.items() if v is None]
    for key in missing:
        ranks[key] = len(finite) + (len(missing) + 1) / 2
    return ranks


def _position(target: str, badness: Mapping[str, float | None]) -> int:
    """1 + the number of trials strictly better than ``target`` (lower badness, None worst).
    Ties count in the trial's favour: stopping is the choice that cannot be undone."""
    own = badness[target]
    if own is None:
        return 1 + sum(v is not None for v in badness.values())
    return 1 + sum(v is not None and v < own for v in badness.values())


def _pct(fraction: float) -> str:
    return f"{round(fraction * 100, 4):g}%"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


# --- the recipe's signals ----------------------------------------------------------------


def window_stats(
    telemetry: Sequence[Mapping[str, Any]], start_samples: float, end_samples: float
) -> tuple[float | None, float | None]:
    """Mean gradient norm and mean loss of the steps that trained on samples in the window.

    A record covers the samples between the previous record and itself, so a step counts when
    that span overlaps ``(start_samples, end_samples]``. This keeps the step that crosses the
    end (the one a rung is judged at) even when a large batch carries it past the rung.

    Args:
        telemetry: step records in order, each with ``samples``, ``grad_norm`` and ``loss``.
        start_samples: the window starts after this many samples (0 = from the start).
        end_samples: the window ends at this many samples.

    Returns:
        ``(mean_grad_norm, mean_loss)``; each None when no finite value lies in the window
        (None, NaN and inf are skipped, not averaged).

    Raises:
        ValueError: the window is empty or negative.
    """
    if not 0 <= start_samples < end_samples:
        raise ValueError(f"window must satisfy 0 <= start < end, got ({start_samples}, {end_samples}]")
    grads: list[float] = []
    losses: list[float] = []
    previous = 0
    for record in telemetry:
        if previous >= end_samples:
            break
        if record["samples"] > start_samples:
            if _finite(record.get("grad_norm")):
                grads.append(float(record["grad_norm"]))
            if _finite(record.get("loss")):
                losses.append(float(record["loss"]))
        previous = record["samples"]
    return _mean(grads), _mean(losses)


def dynamics_scores(
    cohort: Sequence[TrialProgress], rung_fraction: float, window: float | None = None
) -> dict[str, float]:
    """The recipe's early-dynamics score of every trial that reached a rung (lower is better).

    Each trial gets its rank on mean gradient norm (lower is better) plus its rank on mean
    training loss (higher is better: the recipe found runs with higher early loss end better),
    both over its records in the window. Ties share average ranks; a trial with no finite
    value in the window ranks worst on that signal.

    Args:
        cohort: trials of one cohort; only those whose samples reached ``rung_fraction`` of
            their own planned samples are scored.
        rung_fraction: where the window ends, as a fraction of planned samples, in (0, 1].
        window: fraction of planned samples the window covers, ending at the rung; None means
            from the start of training.

    Returns:
        ``{trial_id: score}``, a score being a sum of two ranks (2 is the best possible).

    Raises:
        ValueError: bad fractions, or two trials with the same id.
    """
    if not _is_number(rung_fraction) or not 0 < rung_fraction <= 1:
        raise ValueError(f"rung_fraction must be in (0, 1], got {rung_fraction!r}")
    if window is not None and (not _is_number(window) or not 0 < window <= rung_fraction):
        raise ValueError(f"window must be in (0, rung_fraction={rung_fraction}], got {window!r}")
    ids = [t.trial_id for t in cohort]
    if len(set(ids)) != len(ids):
        raise ValueError(f"cohort has duplicate trial ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    grads: dict[str, float | None] = {}
    losses: dict[str, float | None] = {}
    for t in cohort:
        end = rung_samples(rung_fraction, t.planned_samples)
        if not t.telemetry or t.telemetry[-1]["samples"] < end:
            continue
        start = window_start(rung_fraction, window, t.planned_samples)
        grads[t.trial_id], losses[t.trial_id] = window_stats(t.telemetry, start, end)
    grad_ranks = _average_ranks(grads, higher_is_better=False)
    loss_ranks = _average_ranks(losses, higher_is_better=True)
    return {k: grad_ranks[k] + loss_ranks[k] for k in grads}
