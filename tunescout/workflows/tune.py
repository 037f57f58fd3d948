"""``tunescout tune``: the practitioner's procedure for a new dataset.

The CBS study found that a few configurations, ranked so that together they come close to the
best on every dataset, are all a new dataset needs; the SFT-recipe study found that weak runs
show themselves early. So: take the top-k configurations of a ranking (an earlier study's
store, any results table, or the shipped presets), run them as one small study in ``promote``
mode, and keep the winner. The study is an ordinary one (its own store and run directories
under ``out``), so a killed ``tune`` resumes by running the same command again.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tunescout.config import ConfigError
from tunescout.settings import flatten_dotted, nest_dotted, parse_overrides
from tunescout.stopping.promotion import expected_fraction
from tunescout.stopping.rules import rung_samples
from tunescout.study.spec import LORA_ONLY, DatasetSpec, StudySpec, validate

__all__ = ["DEFAULT_BUDGET", "DEFAULT_K", "DEFAULT_STOPPING", "TuneResult", "candidate_configs", "format_fates", "tune"]

log = logging.getLogger("tunescout.tune")

DEFAULT_BUDGET = 0.1
"""The budget ``tune --from`` spends when given neither ``--k``, ``--stopping`` nor ``--budget``: a
tenth of the grid, the compute tunescout promises to find good settings in. On the reference
suite (benchmarks/README.md, eight tasks, each left out in turn) k and the rule chosen for it on
the other tasks spent 7.7% of a grid against the fixed top 5's 17.2%, for a mean regret of 11.2%
against 8.5%; ``--k 5`` or a larger ``--budget`` buys the difference back."""
DEFAULT_K = 5
"""Candidates taken without a budget: from the presets, or with ``--k``/``--stopping`` given."""
DEFAULT_STOPPING = {"rule": "asha", "signal": "val_loss", "mode": "promote", "rungs": [0.25], "eta": 3}
"""Every candidate to a quarter of its samples, the best third by validation loss there on to the
end. Validation loss, not the recipe's dynamics: on the demo grid (benchmarks/README.md, "Study
efficiency") ASHA on validation loss at this rung kept each cohort's best within 1% in 11 of 12
cohorts, the recipe's signals in 2; it needs no signal direction to be guessed."""
SOURCE_ONLY = ("eval_at_samples", "eval_every", "save_model", "output_dir", "progress", "checkpoint_every")
"""Fixed settings of a source study that belong to its own runs (sample counts of its data,
its outputs), not to how its configurations train: left behind."""


@dataclass
class TuneResult:
    """Where ``tune`` left its outputs, and each candidate's fate."""

    store: Path
    report: Path
    best: Path | None
    """The winner's saved model (``out/best``), None when no candidate completed."""
    fates: list[dict[str, Any]] = field(default_factory=list)
    """Per candidate: ``source``, ``config``, ``trial_id``, ``status``, ``reason``, ``score``."""


def _family_presets(model: str, method: str) -> tuple[list, str]:
    """The shipped presets of ``method`` for the model's family (found in its name), else all of
    them; and which they are, in words."""
    from tunescout.presets import load_presets

    presets = [p for p in load_presets() if p.method == method]
    named = [p for p in presets if any(f in model.lower() for f in p.families)]
    if named:
        families = sorted({f for p in named for f in p.families if f in model.lower()})
        return named, f"the shipped {method} presets for {'/'.join(families)} models"
    return presets, f"all the shipped {method} presets (none names a family in {model!r})"


def preset_warnings(presets: Sequence[Any], model: str, say: Callable[[str], None]) -> None:
    """Say which presets were made for models of another family or size than ``model``: the
    published values (learning rates for 7B-8B models) often fail on a much smaller model."""
    if not any(p.size or p.families for p in presets):
        return
    from tunescout.train.models import describe_model

    try:
        model_type, n_params = describe_model(model)
    except (OSError, ValueError, ImportError) as exc:  # the sweep reports an unloadable model itself
        log.debug("cannot describe %s: %s", model, exc)
        return
    for p in presets:
        span = p.size_range()
        other_size = span is not None and not span[0] / 4 <= n_params <= span[1] * 4
        other_family = bool(p.families) and model_type not in p.families
        if other_size or other_family:
            say(f"preset {p.name} was made for {'/'.join(p.families)} models of {p.size or 'unstated size'}; "
                f"{model} is a {model_type} model of {n_params / 1e6:,.0f}M parameters, so its settings may not "
                "transfer: rank a grid of your own (--from) or override them (learning_rate=...)")


def candidate_configs(model: str, method: str, source: str | None = None, preset: str | None = None,
                      k: int = 5, tau: float = 0.95, say: Callable[[str], None] = log.warning,
                      ) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]:
    """The configurations to try, each with where it comes from, and fixed settings to train them with.

    Args:
        model, method: what will be tuned (presets are matched to the model's family by name).
        source: a study store or a results table (CSV/Parquet): its CBS top-``k`` for ``method``
            (pooled over its models; a config that covers many datasets elsewhere is the bet).
            A store also gives its study's ``fixed`` settings, under which it ranked them.
        preset: one shipped preset by name.
        k: how many to take from a ranking or the presets; when there are fewer, ``say`` is told why.
        tau: the CBS coverage threshold.
        say: where notes go (fewer than ``k`` candidates, presets made for other models).

    Raises:
        ConfigError: both ``source`` and ``preset``, an unknown preset, or nothing to try.
    """
    if source and preset:
        raise ConfigError("tune takes --from or --preset, not both")
    if k < 1:
        raise ConfigError(f"--k must be at least 1, got {k}")
    if preset:
        from tunescout.presets import load_presets

        by_name = {p.name: p for p in load_presets()}
        if preset not in by_name:
            raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(sorted(by_name))}")
        if k > 1:
            say(f"--k {k}: one candidate, the preset {preset} given")
        preset_warnings([by_name[preset]], model, say)
        return [(f"preset {preset}", dict(by_name[preset].config))], {}
    if not source:
        presets, which = _family_presets(model, method)
        if not presets:
            raise ConfigError(f"no shipped preset for method {method!r}; give --from a ranked study or table")
        if len(presets) < k:
            say(f"--k {k}: {len(presets)} candidate(s), {which}; rank a grid of your own (--from) for more")
        preset_warnings(presets[:k], model, say)
        return [(f"preset {p.name}", dict(p.config)) for p in presets[:k]], {}

    from tunescout.analysis import load_results, rank_results, results_from_store
    from tunescout.workflows.recommend import top_configs
    from tunescout.analysis.table import TABLE_SUFFIXES

    fixed: dict[str, Any] = {}
    if source.endswith(TABLE_SUFFIXES):
        table = load_results(source)
    else:
        from tunescout.study.store import open_store

        table = results_from_store(source, include="completed")  # a stopped trial's score is a shorter run's
        with open_store(source, readonly=True) as store:
            fixed = {k: v for k, v in ((store.study_spec() or {}).get("fixed") or {}).items()
                     if k not in SOURCE_ONLY}
    if "method" in table.columns:
        if not (table["method"] == method).any():
            raise ConfigError(f"{source} ranks no {method} configurations (methods: "
                              f"{', '.join(sorted(map(str, table['method'].dropna().unique())))}); "
                              "give --method one of those, or --preset")
        table = table[table["method"] == method]
    ranking = next(iter(rank_results(table, tau=tau, group_by=None).values()))
    if len(ranking) < k:
        say(f"--k {k}: {len(ranking)} candidates, every {method} configuration {source} ranks")
    return [(f"rank {r.rank} of {source} (covers {r.coverage:.0%} with those above)", r.config)
            for r in top_configs(table, ranking, k, source)], fixed


def tune(model: str, method: str, train: str, eval: str, metric: str = "val_loss", out: str | Path = "runs/tune",
         *, source: str | None = None, preset: str | None = None, k: int | None = None, tau: float = 0.95,
         overrides: Sequence[str] = (), stopping: dict[str, Any] | None = None, workers: int | None = None,
         budget: float | None = None, max_new_tokens: int = DatasetSpec.max_new_tokens,
         eval_limit: int | None = DatasetSpec.eval_limit, say: Callable[[str], None] = log.info) -> TuneResult:
    """Run the top-k candidates on a new dataset in ``promote`` mode and keep the winner.

    Args:
        model, method: the model to fine-tune (path, hub id, ``.gguf`` or ``builtin:``) and how.
        train, eval: the dataset's training and held-out files.
        metric: the task metric that picks the winner (``accuracy``, ``exact_match``, ``f1``,
            ``rougeL``, or ``val_loss``).
        out: the folder for the store (``tune.db``), run directories, ``best/``, ``fates.csv``
            and ``report.html``.
        source, preset, k, tau: where the candidates come from (:func:`candidate_configs`); ``k``
            defaults to :data:`DEFAULT_K`.
        overrides: ``key=value`` train settings applied on top of every candidate (``epochs=2``),
            and so over the source study's fixed settings too.
        stopping: the study's stopping rule (default :data:`DEFAULT_STOPPING`).
        workers: trials at once (default: one per GPU, or one on CPU).
        budget: the compute to spend, as a fraction of the grid (at most 1: of running every
            ranked configuration to the end on this dataset) or in tokens (above 1). It sets ``k``
            and the rungs (:func:`plan_budget`). With a ``source`` and none of ``k``, ``stopping``
            and ``budget``, it is :data:`DEFAULT_BUDGET`; otherwise ``k`` and ``stopping`` are used
            as given.
        max_new_tokens, eval_limit: tokens generated per held-out row, and rows scored, when the
            task metric is taken: a short answer needs few tokens, and generation is most of an
            evaluation's time.

    Returns:
        The :class:`TuneResult`.
    """
    from tunescout.evaluate.metrics import get_metric
    from tunescout.report import build_report
    from tunescout.study.store import open_store
    from tunescout.study.sweep import run_sweep

    out = Path(out)
    if source and budget is None and k is None and stopping is None:
        budget = DEFAULT_BUDGET
    k = DEFAULT_K if k is None else k
    if budget is not None and not (budget > 0 and math.isfinite(budget)):
        raise ConfigError(f"--budget must be a positive fraction of the grid (0.1) or a token count, got {budget}")
    grid = 10**6 if budget is not None else k  # with a budget, rank them all; the plan picks k
    candidates, fixed = candidate_configs(model, method, source, preset, grid, tau,
                                          say=say if budget is None else log.debug)
    forced = flatten_dotted(parse_overrides(list(overrides)))  # the user's word beats every candidate's
    forced.pop("save_model", None)  # but the winner must be saved to be kept
    candidates = [(label, nest_dotted({**flatten_dotted(c), **forced})) for label, c in candidates]
    candidates = fit_to_dataset(candidates, fixed, _count_rows(train), say)
    name = Path(train).stem
    rule = dict(stopping or DEFAULT_STOPPING)
    spec = StudySpec(
        name="tune-" + re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:100], models=[model], methods=[method],
        datasets=[DatasetSpec(name=name, train=str(Path(train).resolve()), eval=str(Path(eval).resolve()),
                              metric=metric, max_new_tokens=max_new_tokens, eval_limit=eval_limit)],
        configs=[c for _, c in candidates], fixed={**fixed, "save_model": True},  # the winner is copied out
        stopping=rule, store=str((out / "tune.db").resolve()), runs_dir=str((out / "runs").resolve()))
    validate(spec)
    policy = _chosen_policy(source, method, budget, say) if budget is not None and budget <= 1 else None
    candidates, spec = _plan(spec, candidates, budget, say, policy)
    run_sweep(spec, workers=workers, on_event=say)

    higher = get_metric(metric).higher_is_better
    source_of = {_key(c, method): label for label, c in candidates}
    with open_store(spec.store, readonly=True) as store:
        finals: dict[str, float] = {}
        for r in store.results(study=spec.name):  # in sample order: the last value is the final one
            if r["name"] == metric and r["value"] is not None:
                finals[r["trial_id"]] = r["value"]
        fates = [{"source": source_of.get(_key(t["hparams"], method), ""), "config": t["hparams"],
                  "trial_id": t["trial_id"], "status": t["status"], "reason": t["reason"],
                  "score": finals.get(t["trial_id"]), "run_dir": t["run_dir"]} for t in store.trials(spec.name)]
    done = [f for f in fates if f["status"] == "completed" and f["score"] is not None]
    best = None
    if done:
        winner = max(done, key=lambda f: f["score"] if higher else -f["score"])
        winner["winner"] = True
        best = save_best(Path(winner["run_dir"]), out / "best", model, method)
        say(f"best: {winner['trial_id']} {winner['config']} {metric}={winner['score']:.4g} -> {best}")
    _write_fates(out / "fates.csv", fates)
    winner = next((f for f in fates if f.get("winner")), None)
    headline = (f"Winner: trial {winner['trial_id']} {json.dumps(winner['config'])}, {metric} = "
                f"{winner['score']:.4g} on {Path(eval).name}; its model is saved in {best}." if winner else
                "No candidate completed, so no model was saved; the fates of the candidates are below.")
    report = build_report(spec.store, out / "report.html", headline=headline)
    return TuneResult(store=Path(spec.store), report=report, best=best, fates=fates)


RUNG_CHOICES = ([0.25], [0.1, 0.25], [0.1])
"""Rung schedules a budget may choose from, the most informative first: a later rung judges on
more training, so it is preferred whenever the budget affords the same number of candidates."""


@dataclass(frozen=True)
class BudgetPlan:
    """How many candidates to try and where to judge them, for a compute budget."""

    k: int
    rungs: list[float]
    eta: float
    runs: float
    """Expected compute in full training runs of one configuration (a candidate's whole run is 1)."""
    note: str = ""


def plan_budget(grid: int, budget_runs: float, eta: float = 3, promote: bool = True,
                where: Callable[[int, Sequence[float]], list[float]] | None = None) -> BudgetPlan:
    """The most candidates (at most ``grid``) that successive halving can try within
    ``budget_runs`` full runs, and the rungs that allow it (:data:`RUNG_CHOICES`, in order).

    ``where(k, rungs)`` gives the fractions of their samples at which the first ``k`` candidates
    really pause (a step of a large batch can carry a trial well past a rung; see
    :func:`pause_fractions`); without it, at the rungs. The winner is trained to the end, so no
    plan costs less than one run: a smaller budget gets the top candidate alone, with a note.
    """
    best = None
    for rungs in RUNG_CHOICES if promote else ([],):
        for k in range(grid, 0, -1):
            runs = k * expected_fraction(k, where(k, rungs) if where else rungs, eta) if rungs else float(k)
            if runs <= budget_runs + 1e-9:
                if best is None or k > best.k:
                    best = BudgetPlan(k, list(rungs), eta, runs)
                break
    if best is None:
        return BudgetPlan(1, [], eta, 1.0, note=f"the budget ({budget_runs:.2f} runs) is less than one full run, "
                                                "which the winner needs: the top candidate alone is trained")
    return best


def pause_fractions(rows: Sequence[dict[str, Any]],
                    min_steps: int = 1) -> Callable[[int, Sequence[float]], list[float]]:
    """For planned trials (``plan_study`` rows, in candidate order): where the first ``k`` pause,
    on average, for each rung — at the first step boundary at or past it, and not before their
    ``min_steps``-th step. A batch of 32 on 64 samples pauses at 50% for a rung at 10%."""
    def where(k: int, rungs: Sequence[float]) -> list[float]:
        out = []
        for rung in rungs:
            reached = []
            for row in rows[:k]:
                planned, batch = row["planned_samples"], max(1, int(row["config"]["batch_size"]))
                steps = max(math.ceil(rung_samples(rung, planned) / batch), min_steps)
                reached.append(min(1.0, steps * batch / planned))
            out.append(sum(reached) / len(reached))
        return out
    return where


def _chosen_policy(source: str | None, method: str, budget: float,
                   say: Callable[[str], None]) -> tuple[int, dict[str, Any]] | None:
    """k and the rule for ``budget`` (a fraction of the grid), chosen by replay on the ``--from``
    store's tasks (:func:`tunescout.analysis.choice.choose_policy`); None when the source holds no
    grid of whole curves on at least two tasks (a results table, a study stopped early), and the
    plan then comes from :func:`plan_budget`."""
    from tunescout.analysis.choice import choose_policy, describe_policy, load_curves
    from tunescout.analysis.table import TABLE_SUFFIXES

    if not source or source.endswith(TABLE_SUFFIXES):
        return None
    tasks, table, spec, tables = load_curves(source, method)
    if len(tasks) < 2:
        log.debug("--budget: %s has %d tasks with whole curves; planning without them", source, len(tasks))
        return None
    policy = choose_policy(tasks, table, spec, tables, budget)
    say(f"--budget {budget:g}: chosen by replaying tune on the {len(tasks)} tasks of {source}, each from the "
        f"others' ranking: {describe_policy(policy)}")
    return policy


def _plan(spec: StudySpec, candidates: list[tuple[str, dict[str, Any]]], budget: float | None,
          say: Callable[[str], None], policy: tuple[int, dict[str, Any]] | None = None,
          ) -> tuple[list[tuple[str, dict[str, Any]]], StudySpec]:
    """Fit the candidates and rungs to the budget (``policy``: as chosen on the source's tasks),
    and say the plan and its expected compute before anything trains."""
    from tunescout.study.sweep import plan_study

    rows = plan_study(spec)
    run_tokens = max(r["planned_tokens"] for r in rows)
    min_steps = spec.early_stopping.rule.min_steps
    grid = len(candidates)
    if policy is not None:
        k, rule = policy
        candidates = candidates[:k]
        spec = dataclasses.replace(spec, configs=[c for _, c in candidates], stopping=dict(rule) or {"rule": "none"})
        validate(spec)
    elif budget is not None:
        budget_runs = budget * grid if budget <= 1 else budget / run_tokens
        plan = plan_budget(grid, budget_runs, float(spec.stopping.get("eta", 3)),
                           spec.stopping.get("mode") == "promote", pause_fractions(rows, min_steps))
        if plan.note:
            say(f"--budget: {plan.note}")
        candidates = candidates[: plan.k]
        stopping = {**spec.stopping, "rungs": plan.rungs} if plan.rungs else {"rule": "none"}
        spec = dataclasses.replace(spec, configs=[c for _, c in candidates], stopping=stopping)
        validate(spec)
    k = len(candidates)
    rule = spec.stopping
    fraction = expected_fraction(k, pause_fractions(rows, min_steps)(k, rule["rungs"]), rule.get("eta", 3)) \
        if rule.get("mode") == "promote" else 1.0
    runs = k * fraction
    whole = f"{runs / grid:.0%} of the {grid}-configuration grid; budget {budget:g}" if budget is not None else \
        f"{fraction:.0%} of running the {k} to the end"
    say(f"plan: {k} candidates, stopping {rule}; expected compute {runs:.2f} full runs "
        f"(~{runs * run_tokens:,.0f} tokens, {whole})")
    return candidates, spec


def _count_rows(path: str) -> int:
    from tunescout.data.formats import read_examples

    return len(read_examples(path))


def fit_to_dataset(candidates: list[tuple[str, dict[str, Any]]], fixed: dict[str, Any], n_rows: int,
                   say: Callable[[str], None]) -> list[tuple[str, dict[str, Any]]]:
    """Candidates whose effective batch exceeds the training set take the whole set as their batch.

    A batch of thousands of samples (the recipe's presets) on a few hundred rows would cycle the
    data many times within one step; a batch of the whole set is the largest that means anything.
    Two candidates that become the same configuration run once.
    """
    from tunescout.config import BatchConfig

    out: list[tuple[str, dict[str, Any]]] = []
    default = fixed.get("batch_size", BatchConfig.batch_size)
    for label, config in candidates:
        batch = config.get("batch_size", default)
        if isinstance(batch, int) and batch > n_rows:
            say(f"{label}: batch_size {batch} is larger than the {n_rows} training rows; using {n_rows}")
            config = {**config, "batch_size": n_rows}
        if any(config == kept for _, kept in out):
            say(f"{label}: the same configuration as an earlier candidate on this dataset; run once")
            continue
        out.append((label, config))
    return out


def save_best(run_dir: Path, best: Path, model: str, method: str) -> Path:
    """Copy the winner's model to ``best`` (with its ``train_config.yaml``), in a form that loads
    on its own: a LoRA adapter on a GGUF base is saved merged, since the adapter's record of its
    base (a folder that needs the GGUF file's name) loads nowhere."""
    from tunescout.train.models import export_merged, is_gguf

    shutil.rmtree(best, ignore_errors=True)
    if method == "lora" and is_gguf(model):
        export_merged(run_dir, best)  # the run directory: its config.yaml names the base as trained
    else:
        shutil.copytree(run_dir / "model", best)
    shutil.copy2(run_dir / "config.yaml", best / "train_config.yaml")
    return best


def _key(config: dict[str, Any], method: str) -> str:
    """A config's identity for matching a trial back to its candidate: dotted keys, sorted, and
    without the LoRA-only keys a full fine-tuning trial drops."""
    flat = flatten_dotted(config)
    return repr(sorted((k, v) for k, v in flat.items() if method == "lora" or not k.startswith(LORA_ONLY)))


def _write_fates(path: Path, fates: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, ["trial_id", "source", "config", "status", "reason", "score", "winner"],
                                extrasaction="ignore")
        writer.writeheader()
        for f in fates:
            writer.writerow({**f, "winner": bool(f.get("winner"))})


def format_fates(result: TuneResult, metric: str) -> str:
    """The table ``tunescout tune`` prints: every candidate's fate, the winner marked, where things are."""
    lines = [f"{'trial':<14} {'status':<9} {metric:>10}  config / source / reason"]
    for f in result.fates:
        score = "-" if f["score"] is None else f"{f['score']:.4g}"
        mark = "  <- best" if f.get("winner") else ""
        lines.append(f"{f['trial_id']:<14} {f['status']:<9} {score:>10}  {json.dumps(f['config'])}{mark}")
        lines.append(f"{'':<36}{f['source']}" + (f"; {f['reason']}" if f["reason"] else ""))
    lines.append(f"best model: {result.best or 'none (no candidate completed)'}")
    lines.append(f"report: {result.report}\nstore: {result.store} (rerun the same command to resume)")
    return "\n".join(lines)
