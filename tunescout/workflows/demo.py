"""`tunescout demo`: the whole method, end to end, on a laptop CPU in minutes.

base model (cached) → generated datasets → sweep with early stopping → CBS ranking → early
dynamics analysis → HTML report. Every stage goes through the same public functions a user
calls on their own study; the demo only chooses small sizes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable

from tunescout.demo.base import ensure_demo_base
from tunescout.demo.study import N_EVAL, N_TRAIN, prepare_demo
from tunescout.study.store import FINISHED

__all__ = ["run_demo"]


def _stage(number: int, total: int, title: str, say: Callable[[str], None]) -> float:
    say(f"[{number}/{total}] {title}")
    return time.perf_counter()


class _SweepProgress:
    """One line per finished trial, with the count so far (a sweep prints starts and ends)."""

    def __init__(self, total: int, say: Callable[[str], None]) -> None:
        self.total, self.done, self.say = total, 0, say
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        word = message.split(" ", 1)[0]
        if word in FINISHED:
            self.done += 1
            trial = message.split(" ")[1]
            self.say(f"    {self.done:>3}/{self.total} {word:<9} {trial}  ({time.perf_counter() - self.started:.0f}s)")
        elif not message.startswith(("start ", "paused ")):  # a promote line says how a cohort's rung went
            self.say(f"    {message}")


def _say_dynamics(correlate: Callable, args: tuple, say: Callable[[str], None]) -> None:
    """The recipe's claim on this study: early gradient norm and loss against the score.

    Promotion runs only the best third of each cohort to the end, too few to correlate with final
    scores; so the demo also correlates with every trial's last evaluated score (at the rung for the
    stopped ones, at the end for the others). That asks whether the first 10% of training predicts
    the ranking the rung made, over all 72 trials, and is labelled as such.
    """
    for only_completed, against in ((True, "final score (trials run to the end)"),
                                    (False, "last evaluated score (the rung's for stopped trials)")):
        pooled = correlate(*args, n_boot=500, only_completed=only_completed).query("level == 'pooled'")
        for row in pooled.itertuples():
            if not row.n:
                say(f"    early dynamics vs {against}: too few trials per cohort to correlate")
                continue
            say(f"    early dynamics vs {against}: grad norm rho {row.rho_lowgrad_better:+.2f} "
                f"[{row.lowgrad_ci_lo:+.2f}, {row.lowgrad_ci_hi:+.2f}], loss rho {row.rho_highloss_better:+.2f} "
                f"[{row.highloss_ci_lo:+.2f}, {row.highloss_ci_hi:+.2f}] (n={row.n}; positive = the recipe's "
                "claim held: lower gradient norm, higher loss, better score)")


def run_demo(out_dir: str | Path = "tunescout-demo", say: Callable[[str], None] | None = None) -> Path:
    """Run the embedded default study and return the path of its HTML report."""
    from tunescout.analysis import dynamics_correlations, rank_results, replay_stopping, results_from_store
    from tunescout.report import build_report
    from tunescout.study.spec import expand_trials, load_study
    from tunescout.study.sweep import run_sweep
    from tunescout.workflows.analyze import read_study_tables

    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out_dir)
    begin = time.perf_counter()
    stages = 5

    t = _stage(1, stages, "base model: tokenizer + pretraining on generated text (cached after the first run)", say)
    ensure_demo_base(say=lambda m: say(f"    {m}"))
    say(f"    ready in {time.perf_counter() - t:.0f}s")

    t = _stage(2, stages, f"datasets and study: generated tasks, {N_TRAIN} train / {N_EVAL} eval rows each", say)
    spec = load_study(prepare_demo(out))
    n_trials = len(expand_trials(spec))
    say(f"    {out / 'study.yaml'}: {n_trials} trials ({' x '.join(spec.methods)} methods, "
        f"{len(spec.datasets)} datasets, grid {spec.grid}), stopping {spec.stopping}")

    t = _stage(3, stages, f"sweep: {n_trials} trials, the weak two thirds stopped at a quarter of their samples", say)
    counts = run_sweep(spec, on_event=_SweepProgress(n_trials, say))
    say(f"    {json.dumps(counts)} in {time.perf_counter() - t:.0f}s")

    t = _stage(4, stages, "rank (Coverage-based Search) and analyze (did early dynamics predict the winners?)", say)
    for (_, method), ranking in rank_results(results_from_store(spec.store, study=spec.name), tau=0.95).items():
        top = ranking.head(3)
        say(f"    {method}: top-3 " + "; ".join(
            f"{r.config_id} (coverage {r.cumulative_coverage:.0%})" for r in top.itertuples()))
    tables, spec_json = read_study_tables(spec.store, spec.name)
    args = (tables["telemetry"], tables["trials"], tables["results"], spec_json)
    _say_dynamics(dynamics_correlations, args, say)
    summary = replay_stopping(*args, rules=[spec.stopping]).summary
    for row in summary.itertuples():
        if row.replayable:
            say(f"    replaying {row.rule}: {row.token_fraction:.0%} of the grid's tokens, "
                f"mean regret {row.mean_regret_rel:.1%}, best kept in {row.best_kept_rate:.0%} of cohorts")

    t = _stage(5, stages, "report", say)
    report = build_report(spec.store, out / "report.html", study=spec.name)
    say(f"    report: {report.resolve()}")
    say(f"demo finished in {time.perf_counter() - begin:.0f}s")
    return report
