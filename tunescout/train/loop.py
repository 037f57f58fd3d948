"""The training loop: one function, read top to bottom.

setup (data, model, optimizer, schedule, resume) → for each optimizer step: pack the effective
batch into micro-batches, accumulate gradients, measure the global gradient norm, clip, step,
emit telemetry, ask the early-stop hook, checkpoint → evaluate, save, write ``result.json``.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import random
import subprocess
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from tunescout.config import TrainConfig
from tunescout.data.packing import collate_plan, plan_micro_batches
from tunescout.data.phases import build_schedule, describe_length
from tunescout.data.cache import cached_prepare, tokenizer_fingerprint
from tunescout.train.accel import check_kernels, compile_model, make_optimizer, packing_refusal, uses_varlen_kernel
from tunescout.train.flops import MfuMeter
from tunescout.train.health import HealthWatch
from tunescout.train.models import count_parameters, load_model, load_tokenizer, save_model
from tunescout.train.rundir import lock_run_dir
from tunescout.train.schedules import lr_factor
from tunescout.train.setup import Numerics, prepare_run_dir, resolve_numerics
from tunescout.train.stepcost import PlanChooser, StepCost, attention_kernel
from tunescout.train.telemetry import (EarlyStop, JsonlSink, Pause, ProgressSink, Sink, StepRecord, last_record,
                                       truncate_records)
from tunescout.track import open_trackers
from tunescout.train.world import World, join

__all__ = ["RunResult", "train"]

log = logging.getLogger("tunescout.train")


@dataclass
class RunResult:
    """What ``result.json`` holds."""

    status: str
    """``completed``, ``stopped``, ``diverged``, ``failed``, or ``paused`` (checkpointed to be resumed)."""
    reason: str = ""
    steps: int = 0
    total_steps: int = 0
    samples: int = 0
    tokens: int = 0
    wall_s: float = 0.0
    final_loss: float | None = None
    eval_loss: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    """What the ``task_eval`` callback returned after training (e.g. a task metric)."""
    data: dict[str, Any] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    output_dir: str = ""


def _versions() -> dict[str, str]:
    """What the run ran on, for ``result.json``. peft's version comes from its package metadata:
    importing peft takes seconds (it imports transformers' model zoo), which every full
    fine-tuning trial of a study would pay for a version string."""
    from importlib.metadata import version

    import transformers

    import tunescout

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__, "peft": version("peft"), "tunescout": tunescout.__version__}
    try:  # the commit of tunescout's own source, when it runs from a checkout
        out["git"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                    check=True, cwd=Path(tunescout.__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _write_result(run_dir: Path, result: RunResult) -> None:
    data = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.__dict__.items()}
    (run_dir / "result.json").write_text(json.dumps(data, indent=2))


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    restart: bool = False,
    sinks: Sequence[Sink] = (),
    early_stop: EarlyStop | None = None,
    task_eval: Callable[[torch.nn.Module, Any], dict[str, Any]] | None = None,
    data_cache: str | Path | None = None,
) -> RunResult:
    """Train one model as ``config`` says and write the run directory.

    Args:
        config: the run's settings.
        resume: continue from the newest checkpoint in ``config.output.output_dir`` (a fresh start when
            there is none). Refused, with the differing keys named, when the directory holds a
            run of another config (see :mod:`tunescout.train.identity`).
        restart: remove the run already in ``config.output.output_dir`` and start over. Without
            ``resume`` or ``restart``, a directory that holds a run is refused.
        sinks: extra receivers of every :class:`StepRecord` (the JSONL file is always written).
        early_stop: called with each record; a :class:`~tunescout.train.telemetry.Pause`
            checkpoints the run and ends it as ``paused`` (resume continues it), another truthy
            return ends it as ``stopped``.
        task_eval: called with ``(model, tokenizer)`` at every validation point and after
            training (not after divergence), e.g. a task metric by generation; its dicts go on
            the step records (``metrics``) and, the last one, into ``result.metrics``.
        data_cache: a folder of prepared data (:mod:`tunescout.data.cache`): the run reads its
            tokenised data from there when a study's driver (or another run) prepared the same,
            and leaves them there otherwise.

    Under ``torchrun`` or ``accelerate launch`` (``WORLD_SIZE`` > 1) every rank calls this with the
    same arguments and the run is trained with FSDP2 across them; rank 0 alone writes the run
    directory and calls the hooks (:mod:`tunescout.train.distributed`).

    Returns:
        The run's :class:`RunResult` (also written to ``result.json``). A run that raises is
        recorded as ``failed`` before the exception propagates.

    Raises:
        ConfigError: the directory holds a run this call may not continue or overwrite.
        RunDirLocked: another process is training in the directory.
    """
    run_dir = Path(config.output.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    world = join(config.numerics.device)  # one process, or FSDP2 ranks under torchrun (tunescout.train.world)
    try:
        with world.main_lock(partial(lock_run_dir, run_dir)):
            return _train_locked(run_dir, config, resume, restart, sinks, early_stop, task_eval, world,
                                 Path(data_cache) if data_cache else None)
    finally:
        world.close()


def _train_locked(run_dir: Path, config: TrainConfig, resume: bool, restart: bool, sinks: Sequence[Sink],
                  early_stop: EarlyStop | None, task_eval: Callable[[torch.nn.Module, Any], dict[str, Any]] | None,
                  world: World, data_cache: Path | None) -> RunResult:
    """:func:`train` once the run directory is locked (by rank 0 alone when there are several)."""
    numerics = resolve_numerics(config, world.size)
    check_kernels(liger=config.numerics.liger, device=numerics.device, attn=numerics.attn)  # before any data is read
    # rank 0 writes, all learn the checkpoint
    checkpoint = world.on_main(partial(prepare_run_dir, run_dir, config, numerics, resume, restart))
    return _train_in(run_dir, config, numerics, checkpoint, sinks, early_stop, task_eval, world, data_cache)


def _train_in(
    run_dir: Path,
    config: TrainConfig,
    numerics: Numerics,
    checkpoint: Path | None,
    sinks: Sequence[Sink],
    early_stop: EarlyStop | None,
    task_eval: Callable[[torch.nn.Module, Any], dict[str, Any]] | None,
    world: World,
    data_cache: Path | None = None,
) -> RunResult:
    """The run itself, in a prepared and locked run directory (see :func:`train`): set up the
    data, model and optimizer; fit; finish (evaluate, checkpoint, save).

    Every process of ``world`` runs this same function; the world shares each batch, reduces,
    evaluates and saves, and only its main process (``main``) writes files.
    """
    result = RunResult(status="failed", output_dir=str(run_dir), versions=_versions())
    owned: list[Sink] = []
    main = world.is_main
    try:
        _seed_everything(config.seed)
        device, dtype = numerics.device, numerics.dtype
        # Mixed precision: float32 master weights for full fine-tuning, compute in `dtype`.
        half = dtype != torch.float32
        weights_dtype = torch.float32 if half and config.numerics.mixed_precision and config.method == "full" else dtype
        autocast = dtype if half else None

        # --- data: tokenized samples and the order of optimizer steps ---
        tokenizer = load_tokenizer(config.tokenizer or config.model, trust_remote_code=config.trust_remote_code)
        data = cached_prepare(config, tokenizer, tokenizer_fingerprint(tokenizer) if data_cache else "", data_cache)
        b = config.batch
        schedule = build_schedule(data.phases, b.batch_size, config.seed, b.max_samples, b.max_steps)
        total_steps = len(schedule)
        warmup_steps = config.optim.warmup_for(total_steps)  # warmup_ratio needs the total, known only now
        result.total_steps = total_steps
        result.data = {"train_samples": len(data.train), "eval_samples": len(data.eval), **vars(data.stats)}
        attn, row_tokens, budget = numerics.attn, numerics.row_tokens, numerics.budget
        pad_id = tokenizer.pad_token_id or 0

        # --- model, optimizer, schedule ---
        build_model = partial(
            load_model, config.model, method=config.method, lora_r=config.lora.r, lora_alpha=config.lora.alpha,
            lora_dropout=config.lora.dropout, lora_target_modules=config.lora.target_modules, dtype=weights_dtype,
            attn_implementation=attn, gradient_checkpointing=config.numerics.gradient_checkpointing, device=device,
            liger=config.numerics.liger, trust_remote_code=config.trust_remote_code,
        )
        model = build_model()
        if config.numerics.compile:
            compile_model(model)
        model = world.shard(model, build=build_model, seed=config.seed)
        decide = partial(world.decide, early_stop)  # the main process decides, every process follows
        task_eval = partial(world.task_eval, task_eval) if task_eval else None  # on the main process's replica
        trainable, total = count_parameters(model)
        result.params = {"trainable": trainable, "total": total}
        params = [p for p in model.parameters() if p.requires_grad]
        # AdamW, fused on a GPU; weight decay on matrices only.
        o = config.optim
        optimizer = make_optimizer(params, lr=o.learning_rate, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
        mfu = MfuMeter.for_model(model, device)
        # Packing needs a model that keeps packed samples apart; else one sample per row (accel.py says why).
        refusal = packing_refusal(model)
        if refusal:
            log.warning("packing off: %s; each sample trains in a row of its own (slower, same result)", refusal)

        # Rows and micro-batches: the plan the cost model finds fastest for each batch (stepcost.py),
        # or, with max_tokens_per_row set, that fixed plan.
        varlen = uses_varlen_kernel(attn)
        chooser = None if row_tokens is not None else PlanChooser(
            StepCost.for_model(model, device, attention_kernel(attn)), budget, config.processing.max_length,
            pack=refusal is None)

        def pack(samples, count: bool = True):
            if chooser is None:
                return plan_micro_batches(samples, budget, row_tokens, pad_id, boundaries=varlen,
                                          pack=refusal is None)
            _, plan = chooser([len(s) for s in samples], sum(s.num_loss_tokens for s in samples), count=count)
            return collate_plan(samples, plan, pad_id, varlen)

        eval_share = world.share(data.eval, partial(pack, count=False)) if data.eval else None
        step_seconds: list[float] = []
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, config.optim.schedule, warmup_steps, total_steps)
        )
        state = {"step": 0, "samples": 0, "tokens": 0, "wall_s": 0.0}
        resume_note = None
        if checkpoint:
            loaded, resume_note = world.load_checkpoint(run_dir, checkpoint, model, optimizer, scheduler)
            state = loaded or state
            if resume_note:
                log.warning("%s", resume_note)
            if main:
                truncate_records(run_dir / "eval.jsonl", state["step"])  # telemetry: JsonlSink(keep_steps=...)
            log.info("resumed at step %d", state["step"])
        # A run resumed at its last step trains nothing more: its totals are the checkpoint's.
        result.steps, result.samples, result.tokens = state["step"], state["samples"], state["tokens"]
        if main and state["step"]:
            result.final_loss = (last_record(run_dir / "telemetry.jsonl", state["step"]) or {}).get("loss")
        log.info("%s: %s, %s/%s trainable params, weights %s, compute %s on %s, data %s", config.method,
                 describe_length(schedule, len(data.train), config.batch.max_samples, config.batch.max_steps),
                 f"{trainable:,}", f"{total:,}", weights_dtype, dtype, device, data.stats.summary())

        if main:  # one at a time, so that `finally` closes those opened before one that fails to open
            owned.append(JsonlSink(run_dir / "telemetry.jsonl", keep_steps=state["step"]))
            owned.append(ProgressSink(total_steps, initial=state["step"], enabled=config.output.progress))
            # trackers read `result` when closed in `finally`, after its status and scores are set
            owned.extend(open_trackers(config.output.track, run_dir, config.to_dict(), result,
                                       group=config.output.track_group, start_step=state["step"]))
        all_sinks = [*owned, *sinks] if main else []
        clip = config.optim.grad_clip if config.optim.grad_clip else float("inf")
        start_time = time.perf_counter() - state["wall_s"]
        health = HealthWatch(vocab_size=getattr(getattr(model, "config", None), "vocab_size", None))
        result.status = "completed"

        # --- the loop ---
        for step, batch in enumerate(schedule[state["step"]:], start=state["step"] + 1):
            t0 = time.perf_counter()
            samples = [data.train[i] for i in batch.indices]
            step_tokens = sum(len(s) for s in samples)
            share = world.share(samples, pack)  # this process's part; its token count, loss and norm are global
            loss = world.accumulate(model, share, device, autocast)
            grad_norm = world.clip(params, clip)  # the norm *before* clipping: the early-dynamics signal
            lr = scheduler.get_last_lr()[0]
            lost = health.check(step, loss, grad_norm)  # non-finite, or finite but no longer learning
            if math.isfinite(loss) and math.isfinite(grad_norm):
                optimizer.step()
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - t0
            step_seconds.append(elapsed)
            seen_before = state["samples"]
            state = {"step": step, "samples": seen_before + len(samples),
                     "tokens": state["tokens"] + step_tokens, "wall_s": time.perf_counter() - start_time}
            val_loss, metrics = None, None
            eval_due = config.evaluation.due(step, total_steps, seen_before, state["samples"])
            if eval_due and not lost:
                if eval_share:
                    val_loss = world.evaluate_loss(model, eval_share, device, autocast)
                metrics = task_eval(model, tokenizer) if task_eval else None
                if main and (val_loss is not None or metrics):
                    _log_eval(run_dir, step, state["samples"], val_loss, metrics)
            record = StepRecord(step=step, samples=state["samples"], tokens=state["tokens"], loss=loss,
                                grad_norm=grad_norm, lr=lr, tokens_per_s=step_tokens / max(elapsed, 1e-9),
                                wall_s=state["wall_s"], loss_tokens=share.loss_tokens,
                                micro_batches=share.total_micro_batches, pad_tokens=share.pad_tokens,
                                phase=batch.phase, epoch=batch.epoch, val_loss=val_loss, metrics=metrics,
                                mfu=per_device(mfu(samples, share.loss_tokens, elapsed), world.size))
            for sink in all_sinks:
                sink.write(record)
            result.steps, result.samples, result.tokens = step, state["samples"], state["tokens"]
            result.final_loss = loss
            if lost:
                result.status, result.reason = "diverged", lost
                log.error("run diverged: %s", lost)
                break
            # The hook first, the checkpoint after: in a sweep the hook hands the record to the
            # driver, so a checkpoint never gets ahead of the steps the store has recorded (a
            # driver killed in between would otherwise lose them on resume).
            verdict = decide(record)
            if isinstance(verdict, Pause):
                result.status, result.reason = "paused", verdict.reason
                break
            if verdict:
                result.status = "stopped"
                result.reason = verdict if isinstance(verdict, str) else f"early stop at step {step}"
                break
            if config.output.checkpoint_every and step % config.output.checkpoint_every == 0 and step < total_steps:
                world.save_checkpoint(run_dir, model, optimizer, scheduler, state)

        if chooser is not None and step_seconds:
            log.debug("%s", chooser.summary(step_seconds))  # for tuning the cost model; nothing a user acts on
        # --- the end: evaluate, checkpoint, save (a paused run only checkpoints: it goes on later) ---
        if result.status == "paused":
            world.save_checkpoint(run_dir, model, optimizer, scheduler, state)
        elif result.status != "diverged":
            if eval_share:
                result.eval_loss = world.evaluate_loss(model, eval_share, device, autocast)
            if task_eval is not None:
                result.metrics = task_eval(model, tokenizer)
            if main and (eval_share or task_eval is not None):
                _log_eval(run_dir, result.steps, result.samples, result.eval_loss, result.metrics)
            if config.output.checkpoint_every:
                world.save_checkpoint(run_dir, model, optimizer, scheduler, state)
            if config.output.save_model:  # with ranks: the full weights gathered into the main process's replica
                world.save_model(model, partial(save_model, tokenizer=tokenizer, out_dir=run_dir / "model",
                                                merge_lora=config.output.merge_lora))
        result.wall_s = time.perf_counter() - start_time
        if resume_note:  # recorded with the run (and a sweep's trial), whatever its status
            result.reason = "; ".join(filter(None, [result.reason, resume_note]))
        return result
    except BaseException as exc:
        result.status = "failed"
        result.reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        raise
    finally:
        for sink in owned:
            sink.close()
        for sink in sinks:
            sink.close()
        if main:
            _write_result(run_dir, result)


def per_device(mfu: float | None, devices: int) -> float | None:
    """MFU per device: the meter counts the whole batch's FLOPs against one device's peak."""
    return None if mfu is None else mfu / devices


def _log_eval(run_dir: Path, step: int, samples: int, val_loss: float | None, metrics: dict | None = None) -> None:
    with (run_dir / "eval.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"step": step, "samples": samples, "val_loss": val_loss, **(metrics or {})}) + "\n")
    log.info("step %d: validation loss %s %s", step, "-" if val_loss is None else f"{val_loss:.4f}", metrics or "")
