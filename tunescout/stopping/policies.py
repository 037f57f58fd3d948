"""When trials are judged: the driver's two scheduling policies over one stopping rule.

A study's ``stopping`` names a rule and its ``mode``. The rule ranks and judges
(:class:`~tunescout.stopping.rules.StoppingRule`); the mode is a policy of the driver:

* :class:`AsyncPolicy` answers each trial as it reaches a rung with the rule's verdict, so no
  trial ever waits for another (ASHA);
* :class:`PromotePolicy` pauses every trial at its next rung, and once a cohort is all there
  ranks it once (:func:`~tunescout.stopping.promotion.decide_ready`): successive halving over
  checkpoints.

Both are pure over the records the driver keeps, so a restarted driver gets the same answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tunescout.config import ConfigError
from tunescout.stopping.promotion import RungDecision, at_rung, decide_ready, expected_fraction
from tunescout.stopping.rules import StoppingRule, TrialProgress, build_rule
from tunescout.train.telemetry import Pause

__all__ = ["MODES", "POLICIES", "AsyncPolicy", "Policy", "PromotePolicy", "Stopping", "Verdict", "build_stopping"]

Verdict = str | Pause | None
"""The answer to a trial that asks at a record: continue (None), stop (the reason), or pause at a rung."""


class Policy(Protocol):
    """When a rule's judgement is applied.

    - ``on_ask(rule, trial, cohort, decided)``: the answer to a trial that asks at a record
      (``decided``: the rungs already decided for it): None to go on, a reason to stop, a
      :class:`Pause` to wait at a rung.
    - ``ready(rule, members, decided)``: a decision for a whole cohort once it is due, else None.
    - ``share(n, rule)``: the expected fraction of a cohort's full compute it trains.
    """

    name: str

    def on_ask(self, rule: StoppingRule, trial: TrialProgress, cohort: Sequence[TrialProgress],
               decided: int) -> Verdict: ...

    def ready(self, rule: StoppingRule, members: Sequence[TrialProgress],
              decided: Mapping[str, int]) -> RungDecision | None: ...

    def share(self, n: int, rule: StoppingRule) -> float | None: ...


@dataclass(frozen=True)
class AsyncPolicy:
    """Judge each trial as it reaches a rung, against the trials that reached it so far."""

    name: str = "async"

    def on_ask(self, rule: StoppingRule, trial: TrialProgress, cohort: Sequence[TrialProgress],
               decided: int) -> Verdict:
        return rule.decide(trial, cohort)

    def ready(self, rule: StoppingRule, members: Sequence[TrialProgress],
              decided: Mapping[str, int]) -> RungDecision | None:
        return None

    def share(self, n: int, rule: StoppingRule) -> float | None:
        return None  # depends on arrival order: no estimate


@dataclass(frozen=True)
class PromotePolicy:
    """Pause each trial at its next rung; rank the cohort there once it has all arrived."""

    name: str = "promote"

    def on_ask(self, rule: StoppingRule, trial: TrialProgress, cohort: Sequence[TrialProgress],
               decided: int) -> Verdict:
        if at_rung(rule, trial.telemetry, trial.planned_samples, decided):
            return Pause(f"rung {decided + 1}")
        return None

    def ready(self, rule: StoppingRule, members: Sequence[TrialProgress],
              decided: Mapping[str, int]) -> RungDecision | None:
        return decide_ready(rule, members, decided)

    def share(self, n: int, rule: StoppingRule) -> float | None:
        return expected_fraction(n, rule.rungs, rule.eta)


POLICIES: dict[str, Policy] = {"async": AsyncPolicy(), "promote": PromotePolicy()}
MODES = tuple(POLICIES)
"""The ``mode`` values of a stopping spec."""


@dataclass(frozen=True)
class Stopping:
    """A study's early stopping, built once from its spec: the rule and the policy applying it."""

    rule: StoppingRule
    policy: Policy

    @property
    def promotes(self) -> bool:
        """Whether trials pause at rungs (and a paused cohort waits for its ranking)."""
        return self.policy.name == "promote"

    def verdict(self, trial: TrialProgress, cohort: Sequence[TrialProgress], decided: int = 0) -> Verdict:
        return self.policy.on_ask(self.rule, trial, cohort, decided)

    def ready(self, members: Sequence[TrialProgress], decided: Mapping[str, int]) -> RungDecision | None:
        return self.policy.ready(self.rule, members, decided)


def build_stopping(spec: Mapping[str, Any]) -> Stopping:
    """A study's stopping from its spec, e.g. ``{"rule": "asha", "mode": "promote", "rungs": [0.25]}``.

    Raises:
        ConfigError: a bad rule or parameter (see :func:`~tunescout.stopping.rules.build_rule`),
            or an unknown ``mode``.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"stopping: expected a mapping with `rule`, got {spec!r}")
    params = dict(spec)
    mode = params.pop("mode", "async")
    rule = build_rule(params)
    if mode not in POLICIES:
        raise ConfigError(f"{rule.name}: mode must be one of {', '.join(MODES)}, got {mode!r}")
    return Stopping(rule, POLICIES[mode])
