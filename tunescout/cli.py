"""Command line: a thin shell over the library. No logic lives here."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

__all__ = ["main"]

log = logging.getLogger("tunescout")

EXIT_CODES = {"completed": 0, "stopped": 0, "failed": 1, "diverged": 3}


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # Library progress bars and advice would garble our own progress display.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
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
        config.output_dir = args.resume_dir
    elif config_path:
        config = load_config(config_path, overrides)
    else:
        from tunescout.demo import default_config

        log.info("no config given: training the embedded default (tiny local model, generated data)")
        config = build_config(default_config().to_dict(), overrides)
    result = train(config, resume=args.resume or bool(args.resume_dir))
    summary = {k: getattr(result, k) for k in ("status", "reason", "steps", "samples", "tokens",
                                                "final_loss", "eval_loss", "wall_s", "output_dir")}
    print(json.dumps(summary, indent=2))
    return EXIT_CODES.get(result.status, 1)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from tunescout.study.spec import load_study
    from tunescout.study.sweep import format_plan, plan_study, run_sweep

    spec = load_study(args.study)
    if args.dry_run:
        print(format_plan(plan_study(spec)))
        return 0
    counts = run_sweep(spec, workers=args.workers)
    print(json.dumps({"store": spec.store, "counts": counts}, indent=2))
    return 0


def _status_rows(store) -> list[dict]:
    scores = {}
    for r in store.results():  # the last value of the trial's final metric
        scores.setdefault(r["trial_id"], {})[r["name"]] = r["value"]
    study = store.study()
    metric_of = {d["name"]: d.get("metric", "val_loss") for d in json.loads(study["spec"])["datasets"]} if study else {}
    rows = []
    for t in store.trials():
        metric = metric_of.get(t["dataset"], "val_loss")
        rows.append({"trial_id": t["trial_id"], "status": t["status"], "reason": t["reason"],
                     "model": t["model"], "method": t["method"], "dataset": t["dataset"], "config": t["hparams"],
                     "started_at": t["started_at"], "finished_at": t["finished_at"], "samples": t["samples"],
                     "tokens": t["tokens"], "metric": metric,
                     "score": scores.get(t["trial_id"], {}).get(metric) if t["status"] != "pending" else None})
    return rows


def _cmd_status(args: argparse.Namespace) -> int:
    from tunescout.study.store import Store

    if not Path(args.store).exists():
        print(f"error: no store at {args.store}", file=sys.stderr)
        return 2
    store = Store(args.store)
    counts, rows = store.counts(), _status_rows(store)
    if args.json:
        print(json.dumps({"counts": counts, "trials": rows}, indent=2, default=str))
        return 0
    print("  ".join(f"{k}: {v}" for k, v in counts.items()))
    for r in rows:
        score = "-" if r["score"] is None else f"{r['score']:.4f}"
        print(f"{r['trial_id']}  {r['status']:<9} {r['method']:<4} {r['dataset']:<20} {r['metric']}={score:<8} "
              f"samples={r['samples']:<7} {json.dumps(r['config'])}  {r['reason']}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from tunescout.study.export import export_store

    for path in export_store(args.store, args.out, formats=args.format):
        print(path)
    return 0


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
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sweep", help="run (or finish) a study: models x datasets x methods x HP grid")
    p.add_argument("study", help="study YAML")
    p.add_argument("--workers", type=int, default=None, help="trials at once (default: one per GPU, or 1 on CPU)")
    p.add_argument("--dry-run", action="store_true", help="print the trials and planned compute, run nothing")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("status", help="progress of a study store")
    p.add_argument("store", help="the study's SQLite file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("export", help="write a study's tables (trials, telemetry, results) for pandas")
    p.add_argument("store", help="the study's SQLite file")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--format", nargs="+", choices=["csv", "parquet"], default=["csv", "parquet"])
    p.set_defaults(func=_cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    from tunescout.config import ConfigError
    from tunescout.data.formats import DataError

    args = _build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (continue with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
