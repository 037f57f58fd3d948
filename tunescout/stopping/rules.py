"""Early-termination rules for a sweep, as pure objects over a cohort's telemetry.

A *cohort* is the set of trials that share model, dataset and method and differ only in
hyperparameters. The SFT recipe found that, within a cohort, runs with a lower gradient norm
and a *higher* training loss early on end up better; ``dynamics`` turns that into a stopping
rule. ``asha`` is the classic asynchronous successive halving on a validation signal, and
``none`` is the baseline every saving is measured against.

Rules hold no state that matters: the driver may be restarted and rebuild them from the spec,
so every decision is derived from the records alone. A rule does two things: it ranks a
cohort's trials at a rung (``rung_scores``) and judges one trial as it reaches a rung
(``decide``). *When* trials are judged is the driver's scheduling policy
(:mod:`tunescout.stopping.policies`), the study's ``mode``:

* ``async`` (as in ASHA): a rung is judged once, at the record that first reaches it (the
  record before was below), which is how a rule knows "first time" without remembering
  anything; a trial is compared with the trials that have reached the same rung so far, so no
  run ever waits for another. The first trial of a cohort is never judged.
* ``promote`` (successive halving over checkpoints): every trial pauses at the rung, and once
  the whole cohort is there the cohort is ranked once by ``rung_scores``; the best ceil(n/eta)
  continue from their checkpoints to the next rung. Every trial is judged against every other;
  the driver records each decision so a restart never re-decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

from tunescout.config import ConfigError
from tunescout.settings import did_you_mean
from tunescout.stopping.signals import (
    RECIPE_SIGNALS,
    SIGNALS,
    TrialProgress,
    _finite,
    _fmt,
    _is_number,
    _latest_and_previous,
    _pct,
    _position,
    dynamics_scores,
    judge_samples,
    keep_count,
    parse_signals,
    rung_samples,
    window_means,
    window_start,
    window_stats,
)

__all__ = [
    "RECIPE_SIGNALS",
    "RULES",
    "SIGNALS",
    "AshaRule",
    "DynamicsRule",
    "NoStopping",
    "StoppingRule",
    "TrialProgress",
    "build_rule",
    "dynamics_scores",
    "judge_samples",
    "keep_count",
    "parse_signals",
    "rung_samples",
    "window_means",
    "window_start",
    "window_stats",
]


@runtime_checkable
class StoppingRule(Protocol):
    """Ranks a cohort's trials at a rung, and judges one trial as it reaches a rung.

    Contract (``tests/stopping/test_stopping_contract.py`` runs it on every rule under both
    scheduling policies):
    - ``decide(trial, cohort)`` returns None to continue, or a reason naming the rung.
    - ``cohort`` holds every trial of the cohort (``trial`` itself included, finished and
      stopped ones with their partial telemetry); where it holds a stale copy of ``trial``,
      ``trial`` wins.
    - It is pure: no I/O, nothing remembered between calls, inputs left untouched; the same
      inputs give the same answer, so a restarted driver gets the decisions it had.
    - A rung is judged once, at the record that first reaches it (for rules on evals: at the
      record the rung's eval was taken at); later calls for that rung return None. A trial
      alone in its cohort is never stopped.
    - ``eval_points(planned_samples)`` lists the sample counts at which the trial must report
      an evaluation (empty for rules that only read telemetry).
    - ``ask_points(planned_samples)`` lists where a verdict can be other than None, as
      ``(samples, min_steps)``: the first record past ``samples`` that is at least the
      ``min_steps``-th step. The trial asks the driver only there and streams every other
      record without waiting; ``decide`` returns None at every other record.

    - ``rungs`` (fractions of planned samples), ``eta``, ``min_trials`` (fewer trials at a rung
      all go on), ``min_steps`` (steps a trial must take before it is judged), ``rung_scores``
      (every trial's score at a rung, lower better, None for no score) and ``describe`` (what a
      stopped trial showed, for its reason) are all promotion
      (:mod:`tunescout.stopping.promotion`) reads.
    """

    name: str
    rungs: Sequence[float]
    eta: float
    min_trials: int

    @property
    def min_steps(self) -> int: ...

    def eval_points(self, planned_samples: int) -> list[int]: ...

    def ask_points(self, planned_samples: int) -> list[tuple[int, int]]: ...

    def decide(self, trial: TrialProgress, cohort: Sequence[TrialProgress]) -> str | None: ...

    def rung_scores(self, fraction: float, cohort: Sequence[TrialProgress]) -> dict[str, float | None]: ...

    def describe(self, trial: TrialProgress, fraction: float) -> str: ...


# --- helpers shared by the rules ---------------------------------------------------------


def _with_self(trial: TrialProgress, cohort: Sequence[TrialProgress]) -> list[TrialProgress]:
    """The cohort with ``trial`` as given (the driver's copy in ``cohort`` may lag a record)."""
    members = [trial if c.trial_id == trial.trial_id else c for c in cohort]
    if all(c.trial_id != trial.trial_id for c in cohort):
        members.append(trial)
    return members


def _check_rung_params(rule: str, rungs: Sequence[float], eta: float, min_trials: int) -> tuple[float, ...]:
    """Validate what ``dynamics`` and ``asha`` share; returns the rungs as a tuple of floats."""
    if isinstance(rungs, (str, bytes)) or not isinstance(rungs, Sequence) or not rungs:
        raise ValueError(f"{rule}: rungs must be a non-empty list of fractions, got {rungs!r}")
    if not all(_is_number(r) and 0 < r < 1 for r in rungs):
        raise ValueError(f"{rule}: rungs must be fractions of planned samples in (0, 1), got {list(rungs)}")
    if any(b <= a for a, b in zip(rungs, rungs[1:])):
        raise ValueError(f"{rule}: rungs must be strictly increasing, got {list(rungs)}")
    if not _is_number(eta) or not eta > 1:
        raise ValueError(f"{rule}: eta must be a number > 1 (keep the best 1/eta), got {eta!r}")
    if isinstance(min_trials, bool) or not isinstance(min_trials, int) or min_trials < 1:
        raise ValueError(f"{rule}: min_trials must be an int >= 1, got {min_trials!r}")
    return tuple(float(r) for r in rungs)


# --- the rules -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NoStopping:
    """Never stops: the baseline against which a rule's compute saving is measured."""

    name: str = field(default="none", init=False, repr=False)
    rungs: Sequence[float] = field(default=(), init=False, repr=False)
    eta: float = field(default=1.0, init=False, repr=False)
    min_trials: int = field(default=1, init=False, repr=False)

    @property
    def min_steps(self) -> int:
        return 1

    def rung_scores(self, fraction: float, cohort: Sequence[TrialProgress]) -> dict[str, float | None]:
        return {}

    def describe(self, trial: TrialProgress, fraction: float) -> str:
        return ""

    def eval_points(self, planned_samples: int) -> list[int]:
        return []

    def ask_points(self, planned_samples: int) -> list[tuple[int, int]]:
        return []

    def decide(self, trial: TrialProgress, cohort: Sequence[TrialProgress]) -> str | None:
        return None


@dataclass(frozen=True)
class DynamicsRule:
    """The SFT recipe's rule: at each rung, stop the trials whose early dynamics rank outside the
    best 1/eta of the trials that have reached that rung.

    The score (:func:`dynamics_scores`) is the weighted mean, over ``signals``, of each trial's
    normalised rank on that signal's window mean; the recipe's signals (lower gradient norm,
    higher loss) are the default, but a study whose own analysis shows another direction held
    (``tunescout analyze`` suggests one) can set any subset, direction and weight.
    """

    rungs: Sequence[float] = (0.1, 0.25)
    """Fractions of planned samples at which trials are judged, strictly increasing in (0, 1)."""
    eta: float = 3.0
    """Keep the best ceil(n / eta) of the n trials that reached a rung."""
    window: float | None = None
    """Fraction of planned samples the judged window covers, ending at the rung; None = from
    the start. At most the first rung, so every window lies inside training."""
    min_trials: int = 2
    """No decision while fewer trials than this have reached the rung."""
    signals: Any = None
    """``{grad_norm: lower, loss: higher}`` (the default), any subset or direction, each as
    ``lower``/``higher`` or ``{direction: ..., weight: ...}``; kept as sorted triples."""
    min_steps: int = 3
    """The fewest optimizer steps a judged window averages (a large batch reaches a rung in few)."""
    name: str = field(default="dynamics", init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rungs", _check_rung_params(self.name, self.rungs, self.eta, self.min_trials))
        object.__setattr__(self, "eta", float(self.eta))
        signals = self.signals
        if isinstance(signals, tuple) and all(isinstance(x, tuple) and len(x) == 3 for x in signals):
            signals = {name: {"direction": d, "weight": w} for name, d, w in signals}
        object.__setattr__(self, "signals", parse_signals(signals))
        if isinstance(self.min_steps, bool) or not isinstance(self.min_steps, int) or self.min_steps < 1:
            raise ValueError(f"dynamics: min_steps must be an int >= 1, got {self.min_steps!r}")
        if self.window is not None and (not _is_number(self.window) or not 0 < self.window <= self.rungs[0]):
            raise ValueError(f"dynamics: window must be in (0, first rung={self.rungs[0]}], got {self.window!r}")

    def eval_points(self, planned_samples: int) -> list[int]:
        return []  # telemetry is all this rule reads

    def ask_points(self, planned_samples: int) -> list[tuple[int, int]]:
        return [(rung_samples(f, planned_samples), self.min_steps) for f in self.rungs]

    def rung_scores(self, fraction: float, cohort: Sequence[TrialProgress]) -> dict[str, float | None]:
        """The score at a rung of every trial that reached it (lower is better)."""
        return dict(dynamics_scores(cohort, fraction, self.window, self.signals, self.min_steps))

    def describe(self, trial: TrialProgress, fraction: float) -> str:
        """What the trial showed at the rung, for a stop reason."""
        rung = rung_samples(fraction, trial.planned_samples)
        end = judge_samples(trial.telemetry, rung, self.min_steps) or rung
        start = window_start(fraction, self.window, trial.planned_samples)
        means = window_means(trial.telemetry, start, end, [n for n, _, _ in self.signals], self.min_steps)
        shown = ", ".join(f"mean {name} {_fmt(value)}" for name, value in means.items())
        return f"{shown} over samples {start:g}-{end}"

    def decide(self, trial: TrialProgress, cohort: Sequence[TrialProgress]) -> str | None:
        if not trial.telemetry:
            return None
        now, before = _latest_and_previous(trial.telemetry)
        # One record may cross several rungs (a large batch); judge each, the earliest first, at
        # the record judge_samples names (past the rung, and at least the min_steps-th step).
        for index, fraction in enumerate(self.rungs, start=1):
            point = judge_samples(trial.telemetry, rung_samples(fraction, trial.planned_samples), self.min_steps)
            if point is not None and before < point <= now:
                reason = self._judge(index, fraction, trial, cohort)
                if reason:
                    return reason
        return None

    def _judge(self, index: int, fraction: float, trial: TrialProgress, cohort: Sequence[TrialProgress]) -> str | None:
        scores = self.rung_scores(fraction, _with_self(trial, cohort))
        n = len(scores)
        if n < self.min_trials:
            return None
        keep = keep_count(n, self.eta)
        rank = _position(trial.trial_id, scores)
        if rank <= keep:
            return None
        return (
            f"dynamics rung {index} ({_pct(fraction)} of samples): rank {rank} of {n}, outside top 1/{self.eta:g} "
            f"(best {keep} kept; {self.describe(trial, fraction)})"
        )


@dataclass(frozen=True)
class AshaRule:
    """Asynchronous successive halving on a validation signal: at each rung, stop the trials
    whose evaluation there ranks outside the best 1/eta of the trials evaluated there so far.

    The eval for a rung is the first eval at or past the rung's samples. It counts as taken at
    the first record that reaches its samples (the training loop writes an eval before the
    early-stop hook sees that step's record), and the rung is judged at that record only. If a
    trial crosses a rung before the eval for it is taken, the decision waits for the record at
    which it is. An eval delivered only after a later record cannot be told apart from one
    already judged, so it is not judged: the trial passes that rung rather than risk a second
    verdict.
    """

    rungs: Sequence[float] = (0.1, 0.25)
    """Fractions of planned samples at which trials are evaluated and judged."""
    eta: float = 3.0
    """Keep the best ceil(n / eta) of the n trials evaluated at a rung."""
    min_trials: int = 2
    """No decision while fewer trials than this have an eval for the rung."""
    signal: str = "val_loss"
    """'val_loss' (lower is better) or 'metric' (direction set by ``higher_is_better``)."""
    higher_is_better: bool = True
    """Direction of ``metric``; ignored for ``val_loss``."""
    name: str = field(default="asha", init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rungs", _check_rung_params(self.name, self.rungs, self.eta, self.min_trials))
        object.__setattr__(self, "eta", float(self.eta))
        if self.signal not in ("val_loss", "metric"):
            raise ValueError(f"asha: signal must be 'val_loss' or 'metric', got {self.signal!r}")
        if not isinstance(self.higher_is_better, bool):
            raise ValueError(f"asha: higher_is_better must be true or false, got {self.higher_is_better!r}")

    @property
    def min_steps(self) -> int:
        """ASHA judges the evaluation taken at the rung: the step that reaches it is enough."""
        return 1

    def eval_points(self, planned_samples: int) -> list[int]:
        if isinstance(planned_samples, bool) or not isinstance(planned_samples, int) or planned_samples < 1:
            raise ValueError(f"planned_samples must be a positive int, got {planned_samples!r}")
        return sorted({rung_samples(f, planned_samples) for f in self.rungs})

    def ask_points(self, planned_samples: int) -> list[tuple[int, int]]:
        return [(point, 1) for point in self.eval_points(planned_samples)]

    def rung_scores(self, fraction: float, cohort: Sequence[TrialProgress]) -> dict[str, float | None]:
        """The evaluation at a rung of every trial that reached it, oriented so lower is better
        (None, ranked worst, for a missing or non-finite value)."""
        out: dict[str, float | None] = {}
        for t in cohort:
            end = rung_samples(fraction, t.planned_samples)
            if not t.telemetry or t.telemetry[-1]["samples"] < end:
                continue
            ev = self._rung_eval(t.evals, end, upto=None)
            out[t.trial_id] = None if ev is None else self._badness(ev)
        return out

    def describe(self, trial: TrialProgress, fraction: float) -> str:
        """What the trial showed at the rung, for a stop reason."""
        ev = self._rung_eval(trial.evals, rung_samples(fraction, trial.planned_samples), upto=None)
        return f"{self.signal} {_fmt(None if ev is None else ev.get(self.signal))}"

    def decide(self, trial: TrialProgress, cohort: Sequence[TrialProgress]) -> str | None:
        if not trial.telemetry:
            return None
        now, before = _latest_and_previous(trial.telemetry)
        # The rung to judge is the highest whose eval exists; evals past the latest record are
        # not attributable to a step yet.
        current: tuple[int, float, Mapping[str, Any]] | None = None
        for index, fraction in enumerate(self.rungs, start=1):
            ev = self._rung_eval(trial.evals, rung_samples(fraction, trial.planned_samples), upto=now)
            if ev is not None:
                current = (index, fraction, ev)
        if current is None:
            return None
        index, fraction, ev = current
        if not before < ev["samples"] <= now:
            return None  # taken at an earlier record: this rung was judged then
        badness: dict[str, float | None] = {}
        for t in _with_self(trial, cohort):
            e = self._rung_eval(t.evals, rung_samples(fraction, t.planned_samples), upto=None)
            if e is not None:
                badness[t.trial_id] = self._badness(e)
        n = len(badness)
        if n < self.min_trials:
            return None
        keep = keep_count(n, self.eta)
        rank = _position(trial.trial_id, badness)
        if rank <= keep:
            return None
        return (
            f"asha rung {index} ({_pct(fraction)} of samples): {self.signal} {_fmt(ev.get(self.signal))} "
            f"at {ev['samples']} samples, rank {rank} of {n}, outside top 1/{self.eta:g} (best {keep} kept)"
        )

    @staticmethod
    def _rung_eval(evals: Sequence[Mapping[str, Any]], rung: int, upto: float | None) -> Mapping[str, Any] | None:
        """The first eval (fewest samples) at or past ``rung``, ignoring evals past ``upto``."""
        eligible = [e for e in evals if e["samples"] >= rung and (upto is None or e["samples"] <= upto)]
        return min(eligible, key=lambda e: e["samples"]) if eligible else None

    def _badness(self, ev: Mapping[str, Any]) -> float | None:
        """The eval's signal oriented so that lower is better; None (ranks worst) if missing."""
        value = ev.get(self.signal)
        if not _finite(value):
            return None
        return -float(value) if self.signal == "metric" and self.higher_is_better else float(value)


RULES: dict[str, type] = {"none": NoStopping, "dynamics": DynamicsRule, "asha": AshaRule}
"""Rule name (the ``rule`` key of a stopping spec) → class."""


def _unknown(message: str, key: object, valid: list[str]) -> ConfigError:
    """An error naming the unknown key and the closest valid one, as config errors do."""
    valid_text = ", ".join(f"`{v}`" for v in valid) or "no parameters"
    return ConfigError(f"{message}{did_you_mean(str(key), valid)}; valid: {valid_text}")


def build_rule(spec: Mapping[str, Any]) -> StoppingRule:
    """Build a rule from its spec, e.g. ``{"rule": "dynamics", "rungs": [0.1, 0.25], "eta": 3}``.

    Args:
        spec: a mapping with ``rule`` (a key of ``RULES``) and that rule's parameters.

    Returns:
        The rule, its parameters validated.

    Raises:
        ConfigError (a ValueError): no or unknown rule, an unknown key (named, with the
            closest valid one), or an invalid value.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"stopping: expected a mapping with `rule`, got {spec!r}")
    params = dict(spec)
    rule = params.pop("rule", None)
    if rule is None:
        raise ConfigError(f"stopping: missing `rule` (one of {', '.join(RULES)})")
    if rule not in RULES:
        raise _unknown(f"unknown stopping rule `{rule}`", rule, list(RULES))
    cls = RULES[rule]
    names = [f.name for f in fields(cls) if f.init]
    for key in params:
        if key not in names:
            raise _unknown(f"unknown key `{key}` for stopping rule `{rule}`", key, names)
    try:
        return cls(**params)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
