"""``tunescout eval``: parse the arguments, call :func:`tunescout.evaluate.evaluate_model`, print.

Kept out of ``cli.py`` (one command, one module) and free of heavy imports at the top, so
building the parser costs nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_eval_command"]


def _generation_settings(items: list[str]) -> dict[str, Any]:
    """``["do_sample=true", "temperature=0.7"]`` → ``{"do_sample": True, "temperature": 0.7}`` (values as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--gen `{item}` is not of the form key=value (e.g. --gen do_sample=true)")
        out[key.strip()] = yaml.safe_load(text)
    return out


def _check_output(path: str | None, flag: str) -> None:
    """Refuse an output path that cannot be written before the evaluation runs, not after it."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{flag} {path}: is a folder; give the path of a file to write")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"{flag} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{flag} {path}: the folder {folder} is not writable")


def _cmd_eval(args: argparse.Namespace) -> int:
    from tunescout.evaluate.run import EvalArgs, evaluate_model, format_eval

    _check_output(args.predictions, "--predictions")
    _check_output(args.out, "-o")

    tasks = [t.strip() for t in (args.tasks or "").split(",") if t.strip()]
    config = EvalArgs(data=args.data, metric=args.metric, limit=args.limit, max_new_tokens=args.max_new_tokens,
                      batch_size=args.batch_size, generation=_generation_settings(args.gen), max_length=args.max_length,
                      tasks=tasks, num_fewshot=args.num_fewshot, include_path=args.include_path, base=args.base,
                      device=args.device, dtype=args.dtype, seed=args.seed, trust_remote_code=args.trust_remote_code)
    try:
        doc = evaluate_model(args.model, config, predictions=args.predictions)
    except ImportError as exc:
        if "pip install" not in str(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)  # an optional extra is missing: the hint, not a traceback
        return 2
    print(format_eval(doc))
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=2, default=str) + "\n")
        print(f"wrote {args.out}")
    return 0


def add_eval_command(sub: Any) -> None:
    """Add the ``eval`` subcommand to ``tunescout``'s subparsers."""
    p = sub.add_parser(
        "eval", help="score a trained model: task metric, validation loss, lm-eval harness tasks",
        description="Evaluate a save_pretrained folder, a PEFT adapter (on its base), a run directory (its model/), "
                    "a .gguf file or a builtin: name. With --data: the task metric by batched greedy generation "
                    "and the validation loss; with --tasks: lm-evaluation-harness tasks on the same in-memory model.")
    p.add_argument("model", help="model folder, adapter folder, run directory, .gguf file, builtin:NAME or hub id")
    p.add_argument("--data", help="held-out rows (messages or prompt/completion) as JSONL/JSON/CSV/Parquet")
    p.add_argument("--metric", help="accuracy, exact_match, f1 or rougeL, scored on --data")
    p.add_argument("--limit", type=int, default=None, help="first N rows of --data; at most N documents per task")
    p.add_argument("--max-new-tokens", type=int, default=32, help="longest generated answer")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per generate call")
    p.add_argument("--gen", action="append", default=[], metavar="KEY=VALUE",
                   help="generation setting over greedy decoding, repeatable (--gen do_sample=true --gen top_p=0.9)")
    p.add_argument("--max-length", type=int, default=None,
                   help="truncate validation-loss rows to this many tokens (default: a run directory's own, else 2048)")
    p.add_argument("--tasks", help="comma-separated lm-eval harness tasks (needs pip install 'tunescout[eval]')")
    p.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples per harness prompt")
    p.add_argument("--include-path", default=None, help="folder of extra harness task YAMLs")
    p.add_argument("--base", default=None, help="base model of an adapter, instead of the one it records")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let a model that ships its own Python code (an `auto_map` in its config) run it; "
                        "off, such a model is refused. Only for code you have read and trust")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--seed", type=int, default=0, help="seed for sampling (with --gen do_sample=true)")
    p.add_argument("-o", "--out", default=None, help="write the results as JSON here")
    p.add_argument("--predictions", default=None, help="write every scored row (JSONL) here")
    p.set_defaults(func=_cmd_eval)
