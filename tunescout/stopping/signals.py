"""What the stopping rules compute, apart from the rules themselves: where rungs and windows lie
in samples, the recipe's early-dynamics signals, and the rank arithmetic of "keep the best 1/eta".

Private: import these from :mod:`tunescout.stopping.rules`, which re-exports the public ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tunescout.status import STATUSES

__all__ = ["RECIPE_SIGNALS", "SIGNALS", "TrialProgress", "dynamics_scores", "judge_samples", "keep_count", "parse_signals",
           "rung_samples", "window_means", "window_start", "window_stats"]


@dataclass
class TrialProgress:
    """What the driver knows about one trial of a cohort, rebuilt from the store at any time: what
    every signal and rule reads."""

    trial_id: str
    planned_samples: int
    """Samples the trial would see if run to the end; rungs are fractions of it."""
    telemetry: list[dict]
    """Step records so far, in order; each has ``step``, ``samples`` (cumulative), ``loss`` and
    ``grad_norm`` (the last two None when non-finite)."""
    evals: list[dict] = field(default_factory=list)
    """Evaluations so far: ``{"samples": int, "val_loss": float, "metric": float | None}``."""
    status: str = "running"
    """One of pending | running | paused | completed | stopped | diverged | failed."""

    def __post_init__(self) -> None:
        planned = self.planned_samples
        if isinstance(planned, bool) or not isinstance(planned, int) or planned < 1:
            raise ValueError(f"trial {self.trial_id}: planned_samples must be a positive int, got {planned!r}")
        if self.status not in STATUSES:
            raise ValueError(f"trial {self.trial_id}: status {self.status!r} is not one of {', '.join(STATUSES)}")


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
    """``target``'s place, 1 = best: lower badness first, None last, and equal badness in trial-id
    order. A trial id is a hash of the config, so a tie is broken deterministically, neither by
    grid position nor always in the judged trial's favour (which kept every tied trial)."""
    def key(tid: str) -> tuple:
        value = badness[tid]
        return (value is None, 0.0 if value is None else value, tid)

    own = key(target)
    return 1 + sum(key(tid) < own for tid in badness)


def _pct(fraction: float) -> str:
    return f"{round(fraction * 100, 4):g}%"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


# --- the recipe's signals ----------------------------------------------------------------


SIGNALS = ("grad_norm", "loss")
"""Step-record fields the ``dynamics`` rule can judge on."""
RECIPE_SIGNALS = {"grad_norm": "lower", "loss": "higher"}
"""The SFT recipe's finding: within a cohort, a lower early gradient norm and a *higher* early
training loss predict a better final score."""


def parse_signals(spec: Mapping[str, Any] | None) -> tuple[tuple[str, str, float], ...]:
    """``{grad_norm: lower, loss: {direction: higher, weight: 0.5}}`` → ``((name, direction,
    weight), ...)`` sorted by name; None gives the recipe's signals, equally weighted.

    Raises:
        ValueError: an unknown signal or direction, a weight that is not a positive number, or
            no signal at all.
    """
    spec = RECIPE_SIGNALS if spec is None else spec
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError(f"dynamics: signals must be a non-empty mapping such as {RECIPE_SIGNALS}, got {spec!r}")
    out = []
    for name, value in spec.items():
        if name not in SIGNALS:
            raise ValueError(f"dynamics: unknown signal {name!r}; signals: {', '.join(SIGNALS)}")
        direction, weight = (value, 1.0) if not isinstance(value, Mapping) else (
            value.get("direction"), value.get("weight", 1.0))
        if isinstance(value, Mapping) and set(value) - {"direction", "weight"}:
            raise ValueError(f"dynamics: signals.{name} takes `direction` and `weight`, got {sorted(value)}")
        if direction not in ("lower", "higher"):
            raise ValueError(f"dynamics: signals.{name} must be `lower` or `higher` (is better), got {direction!r}")
        if not _is_number(weight) or not weight > 0:
            raise ValueError(f"dynamics: signals.{name}.weight must be a positive number, got {weight!r}")
        out.append((str(name), str(direction), float(weight)))
    return tuple(sorted(out))


def judge_samples(telemetry: Sequence[Mapping[str, Any]], rung: int, min_steps: int = 1) -> int | None:
    """Samples at which a rung is judged: those of the first record at or past the rung that is
    also at least the ``min_steps``-th step (a large batch may cross a rung on its first step;
    it is judged once it has taken enough steps to average). None while neither is reached."""
    for i, record in enumerate(telemetry):
        if record["samples"] >= rung and i + 1 >= min_steps:
            return record["samples"]
    return None


def window_means(
    telemetry: Sequence[Mapping[str, Any]], start_samples: float, end_samples: float,
    names: Sequence[str] = SIGNALS, min_steps: int = 1,
) -> dict[str, float | None]:
    """Mean of each named field over the steps that trained on samples in the window.

    A record covers the samples between the previous record and itself, so a step counts when
    that span overlaps ``(start_samples, end_samples]``. This keeps the step that crosses the
    end (the one a rung is judged at) even when a large batch carries it past the rung. When
    fewer than ``min_steps`` steps lie in the window, it reaches back to the ``min_steps`` steps
    ending with its last one: a large batch takes few steps to a rung, and a mean of one or two
    steps would judge it on noise.

    Returns:
        ``{name: mean}``; None when no finite value lies in the window (None, NaN and inf are
        skipped, not averaged).

    Raises:
        ValueError: the window is empty or negative.
    """
    if not 0 <= start_samples < end_samples:
        raise ValueError(f"window must satisfy 0 <= start < end, got ({start_samples}, {end_samples}]")
    picked: list[int] = []
    previous = 0
    for i, record in enumerate(telemetry):
        if previous >= end_samples:
            break
        if record["samples"] > start_samples:
            picked.append(i)
        previous = record["samples"]
    if picked and len(picked) < min_steps:
        picked = list(range(max(0, picked[-1] - min_steps + 1), picked[-1] + 1))
    out: dict[str, float | None] = {}
    for name in names:
        values = [float(telemetry[i][name]) for i in picked if _finite(telemetry[i].get(name))]
        out[name] = _mean(values)
    return out


def window_stats(
    telemetry: Sequence[Mapping[str, Any]], start_samples: float, end_samples: float, min_steps: int = 1
) -> tuple[float | None, float | None]:
    """``(mean grad_norm, mean loss)`` over the window (see :func:`window_means`)."""
    means = window_means(telemetry, start_samples, end_samples, ("grad_norm", "loss"), min_steps)
    return means["grad_norm"], means["loss"]


def dynamics_scores(
    cohort: Sequence[TrialProgress], rung_fraction: float, window: float | None = None,
    signals: Sequence[tuple[str, str, float]] | None = None, min_steps: int = 1,
) -> dict[str, float]:
    """The early-dynamics score of every trial that reached a rung (0 is best, 1 worst).

    Per signal, each trial gets its rank among the trials at the rung (ties share the average
    rank; a trial with no finite value ranks worst), normalised to [0, 1] as
    ``(rank - 1) / (n - 1)``; the score is the weighted mean over the signals. With the recipe's
    two signals, equally weighted, it orders trials as the sum of their two ranks does.

    Args:
        cohort: trials of one cohort; only those whose samples reached ``rung_fraction`` of
            their own planned samples (and ``min_steps`` steps, see :func:`judge_samples`) are
            scored, each over its window up to the record it is judged at.
        rung_fraction: where the window ends, as a fraction of planned samples, in (0, 1].
        window: fraction of planned samples the window covers, ending at the rung; None means
            from the start of training.
        signals: ``(name, direction, weight)`` triples (:func:`parse_signals`); None = the recipe's.
        min_steps: the fewest steps a window averages (see :func:`window_means`).

    Returns:
        ``{trial_id: score}``.

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
    signals = parse_signals(None) if signals is None else signals
    names = [name for name, _, _ in signals]
    means: dict[str, dict[str, float | None]] = {}
    for t in cohort:
        end = judge_samples(t.telemetry, rung_samples(rung_fraction, t.planned_samples), min_steps)
        if end is None:
            continue
        start = window_start(rung_fraction, window, t.planned_samples)
        means[t.trial_id] = window_means(t.telemetry, start, end, names, min_steps)
    n = len(means)
    total_weight = math.fsum(w for _, _, w in signals)
    scores = {tid: 0.0 for tid in means}
    for name, direction, weight in signals:
        ranks = _average_ranks({tid: m[name] for tid, m in means.items()}, higher_is_better=direction == "higher")
        for tid in means:
            scores[tid] += weight * ((ranks[tid] - 1) / (n - 1) if n > 1 else 0.0)
    return {tid: round(score / total_weight, 12) for tid, score in scores.items()}
