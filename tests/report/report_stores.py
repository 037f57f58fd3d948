"""Synthetic study stores for the report tests, written through the store contract, no training.

Curves follow the recipe's story so the charts look like a study: within a cohort, a better
final score goes with a lower early gradient norm.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from tunescout.study.store import StudyStore, open_store

PLANNED = 320  # samples per trial
TOKENS_PER_SAMPLE = 40


def trial_id(*parts: object) -> str:
    return "t" + hashlib.sha1(repr(parts).encode()).hexdigest()[:10]


def spec_of(name: str, datasets: Sequence[tuple[str, str]], methods: Sequence[str], grid: dict) -> dict:
    return {"name": name, "models": ["builtin:tiny-llama"], "methods": list(methods),
            "datasets": [{"name": n, "train": f"{n}_train.jsonl", "eval": f"{n}_eval.jsonl", "metric": m}
                         for n, m in datasets],
            "grid": grid, "fixed": {"epochs": 1, "schedule": "constant"}, "seeds": [0],
            "stopping": {"rule": "dynamics", "rungs": [0.25], "eta": 2}}


def quality(lr: float, bs: int, dataset: str, strategy: str | None) -> float:
    """In [0, 1]: best at a dataset's own learning rate and batch size, a little noise."""
    rng = random.Random(f"{lr}-{bs}-{dataset}-{strategy}")
    best_lr, best_bs = (1e-3, 16) if dataset != "intents" else (1e-2, 8)  # datasets disagree: CBS needs two
    q = 0.9 - 0.25 * abs(math.log10(lr / best_lr)) + (0.05 if bs == best_bs else 0.0) + rng.uniform(-0.04, 0.04)
    return max(0.05, min(1.0, q - (0.03 if strategy == "phased" else 0.0)))


def make_store(
    path: Path,
    name: str = "demo-mini",
    datasets: Sequence[tuple[str, str]] = (("sentiment", "accuracy"), ("intents", "val_loss")),
    methods: Sequence[str] = ("full", "lora"),
    lrs: Sequence[float] = (1e-4, 1e-3, 1e-2),
    batches: Sequence[int] = (8, 16),
    strategies: Sequence[str] | None = None,
    stop_worst: int = 1,
    val_loss_every_step: bool = False,
    score: Callable[[float, int, str, str | None], float] | None = None,
    status: Callable[[int], str] | None = None,
    lora_r: int | None = 8,
) -> Path:
    """Write a study store: every model × method × dataset × grid point is one trial.

    Args:
        stop_worst: per cohort, this many of the worst trials end ``stopped`` at 25%.
        score: overrides the final task score (e.g. all zeros).
        status: trial index → a status to leave it in instead (pending, running, failed, ...).
        lora_r: a grid axis of LoRA trials only (``lora.r``), as in a real study; None = none.
    """
    grid: dict = {"learning_rate": list(lrs), "batch_size": list(batches)}
    if strategies:
        grid["strategy"] = list(strategies)
    if lora_r is not None and "lora" in methods:
        grid["lora.r"] = [lora_r]
    store = open_store(path)
    rows, plan = [], []
    index = 0
    for method in methods:
        for dataset, metric in datasets:
            points = [(lr, bs, st) for lr in lrs for bs in batches for st in (strategies or [None])]
            qualities = {p: quality(p[0], p[1], dataset, p[2]) for p in points}
            worst = sorted(points, key=qualities.get)[:stop_worst] if len(points) > 2 else []
            for lr, bs, strategy in points:
                hp = {"learning_rate": lr, "batch_size": bs, **({"strategy": strategy} if strategy else {}),
                      **({"lora.r": lora_r} if lora_r is not None and method == "lora" else {})}
                tid = trial_id(name, method, dataset, lr, bs, strategy)
                rows.append({"trial_id": tid, "model": "builtin:tiny-llama", "method": method,
                             "dataset": dataset, "hparams": hp, "seed": 0, "config": {**hp},
                             "planned_samples": PLANNED, "planned_tokens": PLANNED * TOKENS_PER_SAMPLE})
                forced = status(index) if status else None
                index += 1
                if forced != "pending":
                    plan.append((tid, lr, bs, strategy, metric, dataset, qualities[(lr, bs, strategy)],
                                 (lr, bs, strategy) in worst, forced))
    store.sync_trials(name, spec_of(name, datasets, methods, grid), rows)
    store.add_elapsed(name, 754.0)
    for tid, lr, bs, strategy, metric, dataset, q, is_worst, forced in plan:
        final = score(lr, bs, dataset, strategy) if score else (q if metric == "accuracy" else 2.5 - 2 * q)
        stop_at = PLANNED // 4 if is_worst or forced == "stopped" else PLANNED
        _train(store, tid, lr, bs, q, stop_at, metric, final, val_loss_every_step)
        if forced == "running":
            continue
        if forced in ("failed", "diverged"):
            store.finish(tid, forced, reason="synthetic " + forced)
        elif stop_at < PLANNED:
            store.finish(tid, "stopped", reason="dynamics: outside the best 1/2 at rung 1 (25%)",
                         metrics={metric: final * (0.8 if metric == "accuracy" else 1.25)},
                         totals={"wall_s": 3.0})
        else:
            store.finish(tid, "completed", metrics={metric: final}, totals={"wall_s": 12.0})
    store.close()
    return path


def _train(store: StudyStore, tid: str, lr: float, bs: int, q: float, stop_at: int, metric: str, final: float,
           val_every_step: bool) -> None:
    store.mark_running(tid)
    rng = random.Random(tid)
    for step in range(1, stop_at // bs + 1):
        samples = step * bs
        frac = samples / PLANNED
        loss = 0.6 + (1.2 + 0.6 * q) * math.exp(-3 * frac * (lr / 1e-3) ** 0.5) + rng.uniform(-0.02, 0.02)
        grad = (2.2 - 1.5 * q) * (1 + 0.8 * math.exp(-8 * frac)) + rng.uniform(-0.05, 0.05)
        record = {"step": step, "samples": samples, "tokens": samples * TOKENS_PER_SAMPLE, "loss": loss,
                  "grad_norm": grad, "lr": lr, "tokens_per_s": 1000.0, "wall_s": step * 0.1}
        if val_every_step:
            record["val_loss"] = loss + 0.1
        if samples in (PLANNED // 4, PLANNED // 2) and samples < PLANNED:  # evaluations during training
            record["metrics"] = {metric: final * (0.7 + 0.4 * frac)}
        store.add_telemetry(tid, record)
