"""The choices `tune --budget` picks among, and how a choice is told to the user."""

from __future__ import annotations

from tunescout.analysis.choice import describe_policy, policy_space
from tunescout.stopping.policies import build_stopping


def test_every_choice_is_a_rule_the_sweep_runs_and_each_k_can_skip_stopping() -> None:
    space = policy_space(4)
    assert [k for k, rule in space if not rule] == [1, 2, 3, 4]
    for k, rule in space:
        if rule:
            stopping = build_stopping(rule)  # a choice is only ever a rule a study accepts
            assert stopping.promotes and rule["eta"] in {2, 3, k} and rule["signal"] in ("val_loss", "metric")
    assert (4, {"rule": "asha", "signal": "metric", "mode": "promote", "rungs": [0.1], "eta": 4}) in space  # keep one
    assert len(space) == len({(k, str(sorted(r.items()))) for k, r in space})  # no choice twice


def test_a_choice_reads_as_a_plan() -> None:
    assert describe_policy((1, {})) == "the top 1, each trained to the end"
    rule = {"rule": "asha", "signal": "val_loss", "mode": "promote", "rungs": [0.1], "eta": 3}
    assert describe_policy((5, rule)) == "the top 5, ASHA on val_loss at rungs [0.1], eta 3 (promote)"
