"""One run on several processes: the process group, FSDP2 wrapping, and each step split across ranks.

The invariant is the single-process one (:mod:`tunescout.train.loss`): the loss of an effective
batch is the sum of its token losses divided once by its loss-token count, so the gradient does
not depend on how the batch is cut. Across ranks this needs three things, each easy to get wrong:

- **The count is global.** Each rank scales its micro-batches by the loss-token count of the
  *whole* effective batch (all-reduced), and FSDP's gradient reduction is set to a plain sum.
  FSDP averages over ranks by default, which is right only when every rank divides by its own
  count and all counts are equal; with packed, variable-length samples they never are.
- **Every rank makes the same number of passes.** FSDP all-gathers each block's weights in every
  forward and reduce-scatters its gradients in every backward; a rank with one micro-batch
  fewer would leave the others waiting forever. Ranks short of the longest share run *filler*
  passes on one of their micro-batches with the loss multiplied by zero: they add nothing to
  the gradient and keep the collectives in step.
- **The norm is global.** Gradients are sharded DTensors; their norm is reduced over all ranks
  before clipping, so every rank clips by the same factor, the one a single process would use.

How a batch is split: every rank reads the same data and draws the same step order, so each
knows the whole effective batch. Its samples are dealt longest first to the rank with the
fewest tokens so far (loads within one sample's length of each other), and each rank packs its
share with the same plan a single process uses (same budget, same row length). Splitting
samples first, rather than dealing out the micro-batches of a global plan, keeps every rank
busy when a batch packs into fewer micro-batches than there are ranks.

Rank 0 alone decides and writes: it calls the early-stop hook and broadcasts the verdict, runs
``task_eval`` and saves the model on an unsharded *replica* (built once, refreshed from the
sharded weights each time; one full copy of the weights on rank 0), and writes every file of the
run directory except the checkpoint shards each rank writes itself.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist

from tunescout.config import ConfigError
from tunescout.data.packing import MicroBatch
from tunescout.data.tokenize import TokenizedSample
from tunescout.train.identity import recorded
from tunescout.train.loss import micro_batch_loss_sum
from tunescout.train.distributed.split import Share, deal_samples, shard_model
from tunescout.train.rundir import RunDirLocked

__all__ = ["TIMEOUT_ENV", "FsdpRanks", "RankEnv", "check_world_size", "join_world", "rank_env"]


TIMEOUT_ENV = "TUNESCOUT_DIST_TIMEOUT_S"
"""Seconds a collective may wait (default one hour). Ranks wait in one while rank 0 alone runs
``task_eval`` or waits for a sweep driver's verdict, which can take long; a real hang is still
ended, and torchrun ends every rank as soon as one fails."""
DEFAULT_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class RankEnv:
    """Where this process stands among the ones ``torchrun`` / ``accelerate launch`` started."""

    rank: int
    size: int
    """``WORLD_SIZE``: processes training the run."""
    local_rank: int
    """Rank on this machine: the GPU this process uses."""


def rank_env(environ: dict[str, str] | os._Environ = os.environ) -> RankEnv | None:
    """This process's rank from the launcher's environment, or None for a single process.

    ``torchrun`` and ``accelerate launch`` both set ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``;
    ``WORLD_SIZE`` unset or 1 is an ordinary single-process run, trained exactly as without a
    launcher.

    Raises:
        ConfigError: ``WORLD_SIZE`` is above 1 but ``RANK`` is missing, or a value is not a number.
    """
    try:
        size = int(environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return None
        if "RANK" not in environ:
            raise ConfigError(f"WORLD_SIZE is {size} but RANK is not set: start the processes with torchrun "
                              "or accelerate launch, which set both")
        rank = int(environ["RANK"])
        return RankEnv(rank, size, int(environ.get("LOCAL_RANK", rank)))
    except ValueError as exc:
        raise ConfigError(f"malformed torchrun environment (WORLD_SIZE, RANK, LOCAL_RANK): {exc}") from None


def _portable(exc: BaseException) -> tuple[str, str]:
    """What other ranks need to re-raise an exception of rank 0: its kind and message."""
    if isinstance(exc, RunDirLocked):
        kind = "locked"
    elif isinstance(exc, ConfigError):
        kind = "config"
    elif isinstance(exc, KeyboardInterrupt):
        kind = "interrupt"
    else:
        kind = "other"
    return kind, f"{type(exc).__name__}: {exc}" if kind == "other" else str(exc)


def _rebuild(kind: str, message: str) -> BaseException:
    if kind == "locked":
        return RunDirLocked(message)
    if kind == "config":
        return ConfigError(message)
    if kind == "interrupt":
        return KeyboardInterrupt()
    return RuntimeError(f"rank 0 failed: {message}")


class FsdpRanks:
    """The ranks of one run and the collective operations the training loop needs: the
    :class:`~tunescout.train.world.World` of a run under ``torchrun``.

    Made by :func:`join_world`; every method is collective (all ranks call it, in the same
    order) unless it says otherwise.
    """

    def __init__(self, env: RankEnv, device: torch.device, owns_group: bool) -> None:
        from torch.distributed.device_mesh import init_device_mesh

        self.rank, self.size, self.local_rank = env.rank, env.size, env.local_rank
        self.device = device
        self.owns_group = owns_group
        self.mesh = init_device_mesh(device.type, (env.size,))
        self._build: Callable[[], torch.nn.Module] | None = None
        self._replica: torch.nn.Module | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the run directory and talks to hooks (not collective)."""
        return self.rank == 0

    # --- plain collectives ---

    def barrier(self) -> None:
        dist.barrier()

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on rank 0 and return its result on every rank.

        An exception on rank 0 is raised on every rank (rank 0 its own; the others a
        ConfigError, RunDirLocked or RuntimeError with its message), so all ranks end together
        instead of the others waiting for rank 0 in the next collective.
        """
        box: list[Any] = [None]
        error: BaseException | None = None
        if self.is_main:
            try:
                box = [("ok", fn())]
            except BaseException as exc:  # noqa: BLE001 - re-raised below, on every rank
                error = exc
                box = [("error", _portable(exc))]
        dist.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if kind == "error":
            if error is not None:
                raise error
            raise _rebuild(*value)
        return value

    @contextlib.contextmanager
    def main_lock(self, lock: Callable[[], contextlib.AbstractContextManager[Any]]) -> Iterator[None]:
        """Hold ``lock()`` (the run directory's) on rank 0 for the ``with`` body; a failure to take
        it (another process trains there) is raised on every rank."""
        with contextlib.ExitStack() as stack:
            self.on_main(lambda: stack.enter_context(lock()))
            yield

    def sum_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) ``tensor`` in place across ranks and return it."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def close(self) -> None:
        """Destroy the process group if :func:`join_world` created it (not collective)."""
        self._replica = None
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    # --- the model ---

    def shard(self, model: torch.nn.Module, build: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
        """FSDP2-wrap ``model`` (see :func:`shard_model`) and reseed each rank's torch RNG.

        Args:
            model: loaded identically on every rank (same weights, same seeded LoRA init).
            build: loads the same model again; rank 0 calls it once to make its unsharded replica.
            seed: the run's seed; rank r continues with ``seed + r``, so dropout draws differ
                between ranks (with one seed, every rank would drop the same positions).
        """
        self._build = build
        shard_model(model, self.mesh)
        torch.manual_seed(seed + self.rank)
        return model

    def gather(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """Rank 0's unsharded replica with the current trainable weights; None on other ranks.

        Only trainable parameters travel (frozen ones never change, the replica loaded them
        from the same source), one at a time, so no rank holds more than one gathered tensor
        beyond its shard.
        """
        from torch.distributed.tensor import DTensor

        if self.is_main and self._replica is None:
            if self._build is None:
                raise RuntimeError("FsdpRanks.gather before FsdpRanks.shard")
            devices = [torch.cuda.current_device()] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):  # building (a LoRA init) must not move the RNG
                self._replica = self._build()
        targets = dict(self._replica.named_parameters()) if self.is_main else {}
        with torch.no_grad():
            for name, param in model.named_parameters():
                if not param.requires_grad:
                    continue
                full = param.full_tensor() if isinstance(param, DTensor) else param
                if self.is_main:
                    targets[name].copy_(full)
        return self._replica if self.is_main else None

    def task_eval(self, fn: Callable[[torch.nn.Module, Any], dict[str, Any]], model: torch.nn.Module,
                  tokenizer: Any) -> dict[str, Any]:
        """``fn(replica, tokenizer)`` on rank 0; its metrics on every rank."""
        replica = self.gather(model)
        return self.on_main(lambda: fn(replica, tokenizer))  # type: ignore[arg-type]

    def save_model(self, model: torch.nn.Module, save: Callable[[torch.nn.Module], Any]) -> None:
        """``save(replica)`` on rank 0 (e.g. ``save_pretrained`` of the full model or the adapter);
        the replica is dropped afterwards (merging LoRA changes it, and the run is over)."""
        replica = self.gather(model)
        self.on_main(lambda: save(replica))
        self._replica = None

    # --- the step ---

    def share(self, samples: Sequence[TokenizedSample],
              pack: Callable[[Sequence[TokenizedSample]], list[MicroBatch]]) -> Share:
        """Deal ``samples`` (the same list on every rank) and pack this rank's part with ``pack``.

        Raises:
            RuntimeError: the ranks disagree on the batch (they read different data).
        """
        mine = [samples[i] for i in deal_samples([len(s) for s in samples], self.size)[self.rank]]
        micro_batches = pack(mine) if mine else []
        stats = torch.zeros(self.size, 4, dtype=torch.int64, device=self.device)
        stats[self.rank, 0] = sum(s.num_loss_tokens for s in mine)
        stats[self.rank, 1] = len(micro_batches)
        stats[self.rank, 2] = sum(mb.input_ids.numel() - mb.num_tokens for mb in micro_batches)
        stats[self.rank, 3] = sum(s.num_loss_tokens for s in samples)
        stats = self.sum_tensor(stats).cpu()
        loss_tokens = int(stats[:, 0].sum())
        if any(int(seen) != loss_tokens for seen in stats[:, 3]):
            raise RuntimeError(f"the ranks disagree on the batch (loss tokens per rank's view: {stats[:, 3].tolist()}, "
                               f"dealt: {loss_tokens}): every rank must read the same data in the same order")
        filler = micro_batches[0] if micro_batches else (pack(samples[:1])[0] if samples else None)
        return Share(micro_batches, int(stats[:, 1].max()), filler, loss_tokens, int(stats[:, 1].sum()),
                     int(stats[:, 2].sum()))

    def accumulate(self, model: torch.nn.Module, share: Share, device: torch.device,
                   autocast: torch.dtype | None = None) -> float:
        """Backward this rank's share scaled by the global loss-token count; the global mean loss.

        The distributed twin of :func:`tunescout.train.loss.accumulate_gradients`.
        """
        total = torch.zeros((), device=device, dtype=torch.float32)
        for mb, counts in share.passes_with_weights():
            loss_sum = micro_batch_loss_sum(model, mb.to(device), autocast)
            if counts:
                (loss_sum / share.loss_tokens).backward()
                total += loss_sum.detach()
            else:  # a filler pass: in step with the other ranks' collectives, adding nothing
                (loss_sum * 0.0).backward()
        return float(self.sum_tensor(total)) / share.loss_tokens

    def clip(self, params: Sequence[torch.nn.Parameter], max_norm: float) -> float:
        """Clip the gradients by their global L2 norm; return the norm before clipping."""
        from torch.distributed.tensor import DTensor

        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
        if isinstance(norm, DTensor):  # a partial norm per shard: reduce it over the ranks
            norm = norm.full_tensor()
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return float(norm)

    @torch.no_grad()
    def evaluate_loss(self, model: torch.nn.Module, share: Share, device: torch.device,
                      autocast: torch.dtype | None = None) -> float:
        """Mean token loss over a share of the validation set, all ranks together (eval mode)."""
        was_training = model.training
        model.eval()
        total = 0.0
        for mb, counts in share.passes_with_weights():
            loss_sum = float(micro_batch_loss_sum(model, mb.to(device), autocast))
            total += loss_sum if counts else 0.0
        model.train(was_training)
        summed = self.sum_tensor(torch.tensor([total], dtype=torch.float64, device=self.device))
        return float(summed[0]) / max(1, share.loss_tokens)

    def decide(self, early_stop: Callable[[Any], Any] | None, record: Any) -> Any:
        """Rank 0's early-stop verdict on ``record`` (None when it has no hook), on every rank."""
        return self.on_main(lambda: early_stop(record) if early_stop else None)

    # --- checkpoints: each rank writes and reads its own shards ---

    def save_checkpoint(self, run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any, state: dict[str, Any]) -> None:
        from tunescout.train.distributed.sharded import save_sharded_checkpoint

        save_sharded_checkpoint(self, run_dir, model, optimizer, scheduler, state)

    def load_checkpoint(self, run_dir: Path, checkpoint: Path, model: torch.nn.Module,
                        optimizer: torch.optim.Optimizer, scheduler: Any) -> tuple[dict[str, Any] | None, str | None]:
        from tunescout.train.distributed.sharded import load_sharded_checkpoint

        return load_sharded_checkpoint(self, checkpoint, model, optimizer, scheduler), None


def join_world(device: str = "auto") -> FsdpRanks | None:
    """Join the process group of a launched run; None for a single process (nothing is done then).

    The backend follows the device: NCCL on CUDA (each rank on GPU ``LOCAL_RANK``), gloo on
    CPU. A process group that already exists (one the caller or ``accelerate`` made) is used
    and left open; one made here is destroyed by :meth:`FsdpRanks.close`. Ranks other than 0 log
    warnings only: one voice per run.

    Args:
        device: the run's ``device`` setting (``auto``, ``cuda``, ``cpu``).

    Raises:
        ConfigError: the launcher's environment is malformed, or asks for more GPUs than there are.
    """
    from tunescout.train.models import resolve_device

    env = rank_env()
    if env is None:
        return None
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        if env.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {env.local_rank} but only {torch.cuda.device_count()} GPU(s) visible: "
                              "start at most one process per GPU")
        torch.cuda.set_device(env.local_rank)
    owns = not dist.is_initialized()
    if owns:
        timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout))
    if env.rank != 0:
        logging.getLogger("tunescout").setLevel(logging.WARNING)
    return FsdpRanks(env, resolved, owns)


def check_world_size(run_dir: str | Path, size: int) -> None:
    """Refuse to resume a run on another number of processes than it was trained on.

    Its checkpoints hold one shard (and one RNG state) per rank, and its batches were dealt to
    that many ranks; continuing on another number would not be the same run.

    Raises:
        ConfigError: the run directory records another world size (1 when it records none).
    """
    found = recorded(run_dir)
    if found is None:
        return
    before = int((found[1] or {}).get("world_size", 1))
    if before != size:
        how = "one process" if before == 1 else f"torchrun --nproc_per_node={before}"
        raise ConfigError(f"{run_dir} was trained on {before} process(es) and cannot resume on {size}: its "
                          f"checkpoints and its batch split are per rank. Resume it with {how}, or --restart it")
