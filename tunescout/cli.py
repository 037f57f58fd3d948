"""tunescout: fine-tune small LLMs with the SFT recipe, sweep hyperparameters with early stopping,
rank configurations with Coverage-based Search, and tune a new dataset for a fraction of a grid.

Run `tunescout COMMAND --help` for a command's options; `-v` (before or after the command) adds
debug logs, library warnings and progress bars, and the traceback of an error."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

__all__ = ["main"]

log = logging.getLogger("tunescout")

EXIT_CODES = {"completed": 0, "stopped": 0, "paused": 0, "failed": 1, "diverged": 3}


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # Library progress bars and advice would garble our own progress display, and flood a log
    # file (a bar redraws as a new line where stderr is not a terminal). -v lets them through.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not verbose:
        import warnings

        # tqdm reads TQDM_* defaults when it is imported: set before transformers imports it (the
        # GGUF de-quantisation bar is a plain tqdm). Trials forked later inherit it.
        os.environ.setdefault("TQDM_DISABLE", "1")
        warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _cmd_train(args: argparse.Namespace) -> int:
    from tunescout.config import build_config, load_config
    from tunescout.train import train

    overrides = list(args.overrides)
    config_path = args.config
    if config_path and "=" in config_path and not Path(config_path).exists():
        overrides.insert(0, config_path)  # `tunescout train lr=1e-3` with no YAML
        config_path = None
    if args.resume_dir:
        config = load_config(Path(args.resume_dir) / "config.yaml", overrides)
        config.output.output_dir = args.resume_dir
    elif config_path:
        config = load_config(config_path, overrides)
    else:
        from tunescout.demo import default_config

        log.info("no config given: training the embedded default (tiny local model, generated data)")
        config = build_config(default_config().to_dict(), overrides)
    result = train(config, resume=args.resume or bool(args.resume_dir), restart=args.restart)
    summary = {k: getattr(result, k) for k in ("status", "reason", "steps", "samples", "tokens",
                                                "final_loss", "eval_loss", "wall_s", "output_dir")}
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one summary (rank 0's), not one per rank
        print(json.dumps(summary, indent=2))
    return EXIT_CODES.get(result.status, 1)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from tunescout.study.spec import load_study
    from tunescout.study.sweep import format_plan, plan_study, run_sweep

    spec = load_study(args.study)
    flags = {"name": args.executor, "address": args.address, "workers": args.workers,
             "gpus_per_trial": args.gpus_per_trial, "cpus_per_trial": args.cpus_per_trial}
    if any(v is not None for v in flags.values()):
        import dataclasses

        from tunescout.study.executors import validate_executor

        given = {k: v for k, v in flags.items() if v is not None}
        current = dataclasses.asdict(spec.executor)
        if given.get("name", current["name"]) != current["name"]:  # another executor's options go
            current = {"max_retries": current["max_retries"]}
        spec.executor = validate_executor({**current, **given}, where="--executor")
    if args.dry_run:
        print(format_plan(plan_study(spec), spec.early_stopping))
        return 0
    counts = run_sweep(spec, retry_failed=args.retry_failed)
    print(json.dumps({"store": spec.store, "counts": counts}, indent=2))
    return _report_failures(spec, args.study)


def _report_failures(spec, study_yaml: str) -> int:
    """Exit 1 with each failed trial and its reason when any failed (a sweep that ran but lost
    trials must not look like success to a script or a scheduler), else 0."""
    from tunescout.study.store import open_store

    with open_store(spec.store, readonly=True) as store:
        failed = store.trials(spec.name, status="failed")
    if not failed:
        return 0
    print(f"{len(failed)} trial(s) failed:", file=sys.stderr)
    for t in failed:
        print(f"  {t['trial_id']} {t['method']} {t['dataset']} {json.dumps(t['hparams'])}: {t['reason']}",
              file=sys.stderr)
    print(f"fix the cause, then run them again: tunescout sweep {study_yaml} --retry-failed", file=sys.stderr)
    return 1


def _cmd_status(args: argparse.Namespace) -> int:
    from tunescout.study.export import status_rows
    from tunescout.study.store import open_store

    with open_store(args.store, readonly=True) as store:
        counts = store.counts(args.study, args.all_versions)
        rows = status_rows(store, args.study, args.all_versions)
        hidden = sum(store.counts(args.study, True).values()) - sum(counts.values())
    if args.json:
        print(json.dumps({"counts": counts, "trials": rows}, indent=2, default=str))
        return 0
    print("  ".join(f"{k}: {v}" for k, v in counts.items()))
    if not args.all_versions and hidden:
        print(f"({hidden} trials of earlier spec versions not shown; --all-versions shows them)")
    for r in rows:
        score = "-" if r["score"] is None else f"{r['score']:.4f}"
        old = "  (superseded)" if r["superseded"] else ""
        print(f"{r['trial_id']}  {r['status']:<9} {r['method']:<4} {r['dataset']:<20} {r['metric']}={score:<8} "
              f"samples={r['samples']:<7} {json.dumps(r['config'])}  {r['reason']}{old}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from tunescout.study.export import export_store

    for path in export_store(args.store, args.out, formats=args.format, study=args.study,
                             all_versions=args.all_versions):
        print(path)
    return 0




def _results_table(source: str, include: str, study: str | None = None, all_versions: bool = False):
    from tunescout.analysis import load_results, results_from_store
    from tunescout.analysis.table import TABLE_SUFFIXES

    if source.endswith(TABLE_SUFFIXES):
        return load_results(source)
    return results_from_store(source, include=include, study=study, all_versions=all_versions)


def _preset_config_id(name: str) -> str:
    """A shipped preset as a config id, so the held-out table can score it when it is in the grid."""
    from tunescout.analysis import config_id_of
    from tunescout.settings import flatten_dotted
    from tunescout.presets import load_presets

    presets = {p.name: p for p in load_presets()}
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(presets)}")
    flat = flatten_dotted(presets[name].config)  # nested `lora: {r: ..}` -> `lora.r`, as in a grid
    return config_id_of(flat)


def _cmd_rank(args: argparse.Namespace) -> int:
    from tunescout.analysis import (format_loo_summary, format_rankings, leave_one_out, loo_summary,
                                    rank_results, ranking_to_json, rankings_to_json)

    table = _results_table(args.source, args.include, args.study, args.all_versions)
    group_by = None if args.pooled else ("model", "method")
    rankings = rank_results(table, tau=args.tau, mode=args.mode, group_by=group_by, include=args.include,
                            top=args.top)
    doc = (ranking_to_json(next(iter(rankings.values()))) if len(rankings) == 1
           else rankings_to_json(rankings, group_by))
    validation = None
    if args.validate:
        detail = leave_one_out(table, tau=args.tau, ks=tuple(args.ks), group=args.holdout, mode=args.mode,
                               group_by=group_by, preset_configs=_preset_config_id(args.preset) if args.preset else None)
        validation = loo_summary(detail)
    if args.json:
        if validation is not None:
            doc["validation"] = validation.to_dict(orient="records")
        print(json.dumps(doc, indent=2, default=str))
    else:
        print(format_rankings(rankings, group_by, top=args.top))
        if validation is not None:
            print()
            print(format_loo_summary(validation))
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=2, default=str))
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    import pandas as pd

    from tunescout.analysis import signals_advice
    from tunescout.workflows.analyze import analyze_study

    rules = _rules_option(Path(args.rules).read_text(encoding="utf-8"), f"--rules {args.rules}", many=True) \
        if args.rules else None
    analysis = analyze_study(args.store, study=args.study, window=args.window, rung=args.rung,
                             all_statuses=args.all_statuses, rules=rules, n_boot=args.boot, seed=args.seed)
    frames, suggested = analysis.frames, analysis.suggested
    if args.json:
        doc = {k: v.to_dict(orient="records") for k, v in frames.items()}
        notes = {k: v.attrs["note"] for k, v in frames.items() if v.attrs.get("note")}
        print(json.dumps({**doc, "suggested_signals": suggested, "notes": notes}, indent=2, default=str))
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_rows", 200):
            for name, frame in frames.items():
                print(f"== {name} ==")
                reason = frame.attrs.get("reason")
                print(reason if frame.empty and reason else frame.to_string(index=False))
                if frame.attrs.get("note"):
                    print(frame.attrs["note"])
                print()
            print(signals_advice(suggested))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, frame in frames.items():
            frame.to_csv(out / f"{name}.csv", index=False)
            print(out / f"{name}.csv")
    return 0


def _rules_option(text: str, flag: str, many: bool = False):
    """Stopping rules given on the command line (YAML: one mapping, or with ``many`` a list of
    them), each checked by the code that builds it, so a typo is refused before any work."""
    import yaml

    from tunescout.config import ConfigError
    from tunescout.stopping.policies import build_stopping

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{flag}: not valid YAML ({exc})".replace("\n", " ")) from None
    rules = value if many else [value]
    shape = "a YAML list of mappings such as [{rule: asha, rungs: [0.25]}]" if many else \
        "a YAML mapping such as {rule: asha, mode: promote, rungs: [0.25], eta: 3}"
    if not isinstance(rules, list) or not rules or not all(isinstance(r, dict) for r in rules):
        raise ConfigError(f"{flag}: expected {shape}, got {value!r}")
    for i, rule in enumerate(rules):
        try:
            build_stopping(rule)
        except (ConfigError, ValueError, TypeError) as exc:
            raise ConfigError(f"{flag}{f' [{i}]' if many else ''}: {exc}") from None
    return rules if many else rules[0]


def _cmd_recommend(args: argparse.Namespace) -> int:
    import yaml

    from tunescout.presets import find_presets

    if args.source:
        from tunescout.workflows.recommend import recommend_from

        table = _results_table(args.source, "last", args.study)
        for header, config in recommend_from(table, args.source, tau=args.tau, top=args.top, method=args.method):
            print(header)
            print(yaml.safe_dump(config, sort_keys=False))
        return 0
    presets = find_presets(args.model_family, args.method)
    if not presets:
        print(f"error: no preset for family={args.model_family!r} method={args.method!r}", file=sys.stderr)
        return 2
    for p in presets[: args.top]:
        print(f"# {p.name}: {p.provenance}\n# source: {p.source}")
        print(yaml.safe_dump({"method": p.method, **p.config}, sort_keys=False))
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from tunescout.workflows.tune import format_fates, tune

    stopping = _rules_option(args.stopping, "--stopping") if args.stopping else None
    result = tune(args.model, args.method, args.train, args.eval, args.metric, args.out, source=args.source,
                  preset=args.preset, k=args.k, tau=args.tau, overrides=args.overrides, stopping=stopping,
                  workers=args.workers, budget=args.budget, say=lambda m: log.info("%s", m),
                  **{k: v for k in ("max_new_tokens", "eval_limit") if (v := getattr(args, k)) is not None})
    print(format_fates(result, args.metric))
    return 0 if result.best else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from tunescout.workflows.demo import run_demo

    out = Path(args.out)
    if out.exists() and not out.is_dir():  # before minutes of base-model pretraining, not after
        raise ValueError(f"--out {out}: is a file; give a folder for the demo's data, store and report")
    out.mkdir(parents=True, exist_ok=True)

    run_demo(args.out)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from tunescout.report import build_report

    print(build_report(args.store, args.out, tau=args.tau, window=args.window, top=args.top, study=args.study))
    return 0


def _store_options(p: argparse.ArgumentParser, all_versions: bool = True) -> None:
    """``--study`` on every command that reads a store; ``--all-versions`` where trials of several
    spec versions can be shown side by side (``analyze`` and ``report`` describe one version)."""
    p.add_argument("--study", default=None, help="the study to read when the store holds several")
    if all_versions:
        p.add_argument("--all-versions", action="store_true",
                       help="also show trials superseded by a later version of the study's spec")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunescout", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="fine-tune a causal LM (full or LoRA)",
                       description="Train from a YAML config with key=value overrides "
                                   "(e.g. `tunescout train run.yaml lr=1e-5 batch_size=3840 lora.r=8`). "
                                   "With no config, trains the embedded default.")
    p.add_argument("config", nargs="?", help="run YAML (omit for the embedded default)")
    p.add_argument("overrides", nargs="*", help="key=value overrides (dotted keys for nested fields)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    p.add_argument("--resume-dir", metavar="RUN_DIR", help="continue the run in RUN_DIR with its saved config")
    p.add_argument("--restart", action="store_true",
                   help="remove the run already in output_dir (checkpoints, telemetry, model) and start over")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sweep", help="run (or finish) a study: models x datasets x methods x HP grid")
    p.add_argument("study", help="study YAML")
    p.add_argument("--workers", type=int, default=None,
                   help="trials at once (default: local, one per GPU or 1 on CPU; ray, as many as the cluster fits)")
    p.add_argument("--executor", choices=("local", "ray"), default=None,
                   help="what runs the trials (default: the study's `executor`, else local)")
    p.add_argument("--address", default=None,
                   help="ray: the cluster (auto, HOST:PORT or ray://HOST:PORT; default: start Ray here)")
    p.add_argument("--gpus-per-trial", type=float, default=None, dest="gpus_per_trial",
                   help="GPUs each trial holds (a whole number above 1: one trial on that many processes)")
    p.add_argument("--cpus-per-trial", type=float, default=None, dest="cpus_per_trial",
                   help="CPU cores each trial holds and trains with")
    p.add_argument("--dry-run", action="store_true", help="print the trials and planned compute, run nothing")
    p.add_argument("--retry-failed", action="store_true", dest="retry_failed",
                   help="launch the trials recorded as failed again (from their checkpoints) once the cause is fixed")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("status", help="progress of a study store")
    p.add_argument("store", help="the study's SQLite file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _store_options(p)
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("export", help="write a study's tables (trials, telemetry, results) for pandas")
    p.add_argument("store", help="the study's SQLite file")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--format", nargs="+", choices=["csv", "parquet"], default=["csv", "parquet"])
    _store_options(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("rank", help="rank configurations with Coverage-based Search")
    p.add_argument("source", help="a study store, or a CSV/Parquet table (config_id, dataset, score, ...)")
    p.add_argument("--tau", type=float, default=0.95, help="a config covers a dataset at >= tau x best")
    p.add_argument("--mode", choices=["ratio", "minmax"], default="ratio", help="relative score")
    p.add_argument("--include", choices=["last", "completed"], default="last",
                   help="stopped/diverged trials count with their last score, or as missing")
    p.add_argument("--top", type=int, default=None, help="show the top N")
    p.add_argument("--pooled", action="store_true", help="one ranking over all models and methods")
    p.add_argument("--validate", action="store_true", help="leave-one-dataset-out top-k vs baselines")
    p.add_argument("--holdout", choices=["dataset", "task_type"], default="dataset")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5])
    p.add_argument("--preset", default=None, help="score this shipped preset as a held-out baseline")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-o", "--out", help="also write the JSON here")
    _store_options(p)
    p.set_defaults(func=_cmd_rank)

    p = sub.add_parser("analyze", help="did early dynamics predict the final score; what would stopping save")
    p.add_argument("store", help="the study's SQLite file")
    p.add_argument("--window", type=float, default=0.1, help="early window, as a fraction of planned samples")
    p.add_argument("--rung", type=float, default=None, help="end the window at this fraction instead")
    p.add_argument("--all-statuses", action="store_true", help="correlate stopped trials too (last score)")
    p.add_argument("--rules", default=None, help="YAML list of stopping rules to replay (default: a standard set)")
    p.add_argument("--boot", type=int, default=2000, help="bootstrap resamples for confidence intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("-o", "--out", help="write each table as CSV into this folder")
    _store_options(p, all_versions=False)
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser("report", help="a self-contained HTML report of a study")
    p.add_argument("store", help="the study's SQLite file")
    p.add_argument("-o", "--out", default="report.html", help="output HTML file")
    p.add_argument("--tau", type=float, default=0.95, help="CBS coverage threshold")
    p.add_argument("--window", type=float, default=0.1, help="early window for the dynamics analysis")
    p.add_argument("--top", type=int, default=5, help="configurations to recommend")
    _store_options(p, all_versions=False)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("tune", help="a new dataset: the top-k ranked configs in promote mode, keep the best",
                       description="Take the top-k configurations of a ranking (a study store or results table "
                                   "with --from, a shipped --preset, or the presets for the model's family), run "
                                   "them as a small study in promote mode, and save the winner's model in OUT/best.")
    p.add_argument("overrides", nargs="*", help="key=value train settings for every candidate (epochs=2)")
    p.add_argument("--model", required=True, help="model path, hub id, .gguf file or builtin:NAME")
    p.add_argument("--method", choices=["full", "lora"], default="lora")
    p.add_argument("--train", required=True, help="the new dataset's training file")
    p.add_argument("--eval", required=True, help="its held-out file (scores the candidates)")
    p.add_argument("--metric", default="val_loss", help="accuracy, exact_match, f1, rougeL or val_loss")
    p.add_argument("--from", dest="source", default=None, help="rank this study store or results table")
    p.add_argument("--preset", default=None, help="try this shipped preset")
    p.add_argument("--k", type=int, default=None,
                   help="candidates to take from the ranking or the presets (default 5; with --from, the "
                        "default --budget sets it)")
    p.add_argument("--tau", type=float, default=0.95, help="CBS coverage threshold")
    p.add_argument("--stopping", default=None,
                   help="stopping rule as YAML (default {rule: asha, signal: val_loss, mode: promote, "
                        "rungs: [0.25], eta: 3})")
    p.add_argument("--workers", type=int, default=None, help="trials at once")
    p.add_argument("--budget", type=float, default=None,
                   help="compute to spend: a fraction of the grid (0.1 = a tenth of running every ranked "
                        "configuration to the end) or tokens (above 1); sets --k and the rule (chosen by "
                        "replay on the --from store's tasks when it holds whole curves); with --from and "
                        "neither --k nor --stopping, 0.1")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="tokens generated per held-out row for the task metric: enough for the longest "
                        "answer (default 32)")
    p.add_argument("--eval-limit", type=int, default=None, help="held-out rows scored by the task metric (default 200)")
    p.add_argument("--out", default="runs/tune", help="folder for the store, runs, best/ and the report")
    p.set_defaults(func=_cmd_tune)

    from tunescout.eval_cmd import add_eval_command

    add_eval_command(sub)

    p = sub.add_parser("demo", help="the embedded default study end to end: train, sweep, rank, analyze, report")
    p.add_argument("--out", default="runs/demo", help="folder for the data, the study store and the report")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("recommend", help="configs to start from: shipped presets or a ranked study")
    p.add_argument("--model-family", default=None, help="llama, mistral, granite, qwen")
    p.add_argument("--method", choices=["full", "lora"], default=None)
    p.add_argument("--top", type=int, default=3)
    p.add_argument("--from", dest="source", default=None, help="rank this study store or results table instead")
    p.add_argument("--tau", type=float, default=0.95)
    p.add_argument("--study", default=None, help="with --from a store: the study to rank when it holds several")
    p.set_defaults(func=_cmd_recommend)
    for command in sub.choices.values():  # global flags also after the command (`tunescout sweep s.yaml -v`)
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="debug logging, library warnings and progress bars, tracebacks on error")
    return parser


RESUME_HINTS = {"train": "continue it with the same command and --resume",
                "sweep": "run the same command again to resume the study",
                "tune": "run the same command again to resume it"}


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every command ends with its result or a one-paragraph error (exit 2 for
    bad input, 1 otherwise), never a traceback; ``-v`` adds the traceback for a bug report."""
    parser = _build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]  # `train run.yaml --restart lr=1e-4`: overrides after flags
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        hint = RESUME_HINTS.get(args.command)
        print("interrupted" + (f" ({hint})" if hint else ""), file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a message, not a traceback
        message, code = _error_message(exc, args)
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"error: {message}", file=sys.stderr)
        return code


def _error_message(exc: BaseException, args: argparse.Namespace) -> tuple[str, int]:
    """What to tell the user about ``exc``, and the exit code: 2 for input the user can fix."""
    import errno
    import sqlite3

    from tunescout.config import ConfigError
    from tunescout.data.formats import DataError
    from tunescout.train.rundir import RunDirLocked

    if isinstance(exc, (ConfigError, DataError, ValueError, FileNotFoundError, RunDirLocked)):
        return str(exc), 2
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if full or getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL":
        return (f"no space left on the device ({getattr(exc, 'filename', None) or exc}): free some space and run "
                "the same command again; what was recorded before is kept"), 1
    if isinstance(exc, sqlite3.DatabaseError):
        where = getattr(args, "store", None) or getattr(args, "study", None) or "the study store"
        return (f"{where}: the study store cannot be read ({exc}); the file is damaged or is not a tunescout "
                "store. Restore it from a copy (`sqlite3 FILE .recover` may save what is left)"), 2
    if isinstance(exc, OSError):
        return str(exc), 1
    if isinstance(exc, RecursionError):
        return f"an input is nested too deeply to read ({exc})", 2
    return (f"{type(exc).__name__}: {exc} (unexpected: please report it with the output of the same command "
            "run with -v)"), 1


if __name__ == "__main__":
    sys.exit(main())
