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
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tunescout.config import ConfigError
from tunescout.settings import flatten_dotted, nest_dotted, parse_overrides
from tunescout.study.spec import LORA_ONLY, DatasetSpec, StudySpec, validate

__all__ = ["DEFAULT_STOPPING", "TuneResult", "candidate_configs", "format_fates", "tune"]

log = logging.getLogger("tunescout.study")

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


def _family_presets(model: str, method: str) -> list:
    from tunescout.presets import load_presets

    presets = [p for p in load_presets() if p.method == method]
    named = [p for p in presets if any(f in model.lower() for f in p.families)]
    return named or presets


def candidate_configs(model: str, method: str, source: str | None = None, preset: str | None = None,
                      k: int = 5, tau: float = 0.95) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]:
    """The configurations to try, each with where it comes from, and fixed settings to train them with.

    Args:
        model, method: what will be tuned (presets are matched to the model's family by name).
        source: a study store or a results table (CSV/Parquet): its CBS top-``k`` for ``method``
            (pooled over its models; a config that covers many datasets elsewhere is the bet).
            A store also gives its study's ``fixed`` settings, under which it ranked them.
        preset: one shipped preset by name.
        k: how many to take from a ranking or the presets.
        tau: the CBS coverage threshold.

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
        return [(f"preset {preset}", dict(by_name[preset].config))], {}
    if not source:
        found = _family_presets(model, method)[:k]
        if not found:
            raise ConfigError(f"no shipped preset for method {method!r}; give --from a ranked study or table")
        return [(f"preset {p.name}", dict(p.config)) for p in found], {}

    from tunescout.analysis import load_results, nested_hparams, rank_results, results_from_store
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
    out = []
    for row in ranking.head(k).itertuples():
        record = table[table["config_id"] == row.config_id].iloc[0].to_dict()
        config = nested_hparams(record)
        if not config:
            raise ConfigError(f"{source}: config {row.config_id!r} has no hp.* columns to train it with")
        out.append((f"rank {row.rank} of {source} (covers {row.cumulative_coverage:.0%} with those above)", config))
    return out, fixed


def tune(model: str, method: str, train: str, eval: str, metric: str = "val_loss", out: str | Path = "runs/tune",
         *, source: str | None = None, preset: str | None = None, k: int = 5, tau: float = 0.95,
         overrides: Sequence[str] = (), stopping: dict[str, Any] | None = None, workers: int | None = None,
         say: Callable[[str], None] = log.info) -> TuneResult:
    """Run the top-k candidates on a new dataset in ``promote`` mode and keep the winner.

    Args:
        model, method: the model to fine-tune (path, hub id, ``.gguf`` or ``builtin:``) and how.
        train, eval: the dataset's training and held-out files.
        metric: the task metric that picks the winner (``accuracy``, ``exact_match``, ``f1``,
            ``rougeL``, or ``val_loss``).
        out: the folder for the store (``tune.db``), run directories, ``best/``, ``fates.csv``
            and ``report.html``.
        source, preset, k, tau: where the candidates come from (:func:`candidate_configs`).
        overrides: ``key=value`` train settings applied on top of every candidate (``epochs=2``),
            and so over the source study's fixed settings too.
        stopping: the study's stopping rule (default :data:`DEFAULT_STOPPING`).
        workers: trials at once (default: one per GPU, or one on CPU).

    Returns:
        The :class:`TuneResult`.
    """
    from tunescout.evaluate.metrics import get_metric
    from tunescout.report import build_report
    from tunescout.study.store import open_store
    from tunescout.study.sweep import run_sweep

    out = Path(out)
    candidates, fixed = candidate_configs(model, method, source, preset, k, tau)
    forced = flatten_dotted(parse_overrides(list(overrides)))  # the user's word beats every candidate's
    forced.pop("save_model", None)  # but the winner must be saved to be kept
    candidates = [(label, nest_dotted({**flatten_dotted(c), **forced})) for label, c in candidates]
    name = Path(train).stem
    spec = StudySpec(
        name=f"tune-{name}", models=[model], methods=[method],
        datasets=[DatasetSpec(name=name, train=str(Path(train).resolve()), eval=str(Path(eval).resolve()),
                              metric=metric)],
        configs=[c for _, c in candidates], fixed={**fixed, "save_model": True},  # the winner is copied out
        stopping=dict(stopping or DEFAULT_STOPPING),
        store=str((out / "tune.db").resolve()), runs_dir=str((out / "runs").resolve()))
    validate(spec)
    say(f"tune {model} ({method}) on {name}: {len(candidates)} candidates, stopping {spec.stopping}")
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
        best = out / "best"
        shutil.rmtree(best, ignore_errors=True)
        shutil.copytree(Path(winner["run_dir"]) / "model", best)
        shutil.copy2(Path(winner["run_dir"]) / "config.yaml", best / "train_config.yaml")
        say(f"best: {winner['trial_id']} {winner['config']} {metric}={winner['score']:.4g} -> {best}")
    _write_fates(out / "fates.csv", fates)
    report = build_report(spec.store, out / "report.html")
    return TuneResult(store=Path(spec.store), report=report, best=best, fates=fates)


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
