"""Where a run trains: one process, or several FSDP2 ranks. The training loop reads the same for
both; every difference (how a batch is shared, how the loss is reduced and the gradient clipped,
who evaluates, decides and writes, how checkpoints are laid out) lives behind :class:`World`.

:class:`OneProcess` is the plain case; :class:`~tunescout.train.distributed.ranks.FsdpRanks` its
collective twin under ``torchrun`` (its module docstring says what each operation must keep).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from tunescout.data.packing import MicroBatch
from tunescout.data.tokenize import TokenizedSample
from tunescout.train.checkpoint import load_newest_loadable, save_checkpoint
from tunescout.train.distributed.split import Share
from tunescout.train.loss import accumulate_gradients, evaluate_loss

__all__ = ["OneProcess", "Share", "World", "join"]

Pack = Callable[[Sequence[TokenizedSample]], list[MicroBatch]]


class World(Protocol):
    """The operations the training loop needs from the processes a run trains on.

    Every method is called by every process in the same order; ``is_main`` alone writes the
    run directory and talks to hooks, and what it decides (a verdict, metrics) every process
    receives.
    """

    size: int

    @property
    def is_main(self) -> bool: ...

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on the main process; its result (or its exception) on every process."""

    def main_lock(self, lock: Callable[[], contextlib.AbstractContextManager[Any]]
                  ) -> contextlib.AbstractContextManager[None]:
        """``lock()`` (the run directory's) held by the main process for the ``with`` body."""

    def close(self) -> None: ...

    def shard(self, model: torch.nn.Module, build: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
        """The model as this world trains it (``build`` loads it again where a replica is needed)."""

    def share(self, samples: Sequence[TokenizedSample], pack: Pack) -> Share:
        """This process's part of a batch (or of the validation set), packed by ``pack``."""

    def accumulate(self, model: torch.nn.Module, share: Share, device: torch.device,
                   autocast: torch.dtype | None = None) -> float:
        """Backward the share scaled by the whole batch's loss-token count; the batch's mean loss."""

    def clip(self, params: Sequence[torch.nn.Parameter], max_norm: float) -> float:
        """Clip the gradients by their global L2 norm; the norm before clipping."""

    def evaluate_loss(self, model: torch.nn.Module, share: Share, device: torch.device,
                      autocast: torch.dtype | None = None) -> float: ...

    def decide(self, early_stop: Callable[[Any], Any] | None, record: Any) -> Any:
        """The early-stop hook's verdict on ``record`` (None without a hook)."""

    def task_eval(self, fn: Callable[[torch.nn.Module, Any], dict[str, Any]], model: torch.nn.Module,
                  tokenizer: Any) -> dict[str, Any]: ...

    def save_model(self, model: torch.nn.Module, save: Callable[[torch.nn.Module], Any]) -> None: ...

    def save_checkpoint(self, run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any, state: dict[str, Any]) -> None: ...

    def load_checkpoint(self, run_dir: Path, checkpoint: Path, model: torch.nn.Module,
                        optimizer: torch.optim.Optimizer, scheduler: Any) -> tuple[dict[str, Any] | None, str | None]:
        """The resumed counters (None: start from scratch) and a note when a damaged checkpoint was skipped."""


class OneProcess:
    """A run on one process: every operation is the plain one."""

    size = 1
    is_main = True

    def on_main(self, fn: Callable[[], Any]) -> Any:
        return fn()

    @contextlib.contextmanager
    def main_lock(self, lock: Callable[[], contextlib.AbstractContextManager[Any]]) -> Iterator[None]:
        with lock():
            yield

    def close(self) -> None:
        pass

    def shard(self, model: torch.nn.Module, build: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
        return model

    def share(self, samples: Sequence[TokenizedSample], pack: Pack) -> Share:
        micro_batches = pack(samples) if samples else []
        return Share(micro_batches, len(micro_batches), None, sum(s.num_loss_tokens for s in samples),
                     len(micro_batches), sum(mb.input_ids.numel() - mb.num_tokens for mb in micro_batches))

    def accumulate(self, model: torch.nn.Module, share: Share, device: torch.device,
                   autocast: torch.dtype | None = None) -> float:
        return accumulate_gradients(model, share.micro_batches, share.loss_tokens, device, autocast)

    def clip(self, params: Sequence[torch.nn.Parameter], max_norm: float) -> float:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm))

    def evaluate_loss(self, model: torch.nn.Module, share: Share, device: torch.device,
                      autocast: torch.dtype | None = None) -> float:
        return evaluate_loss(model, share.micro_batches, device, autocast)

    def decide(self, early_stop: Callable[[Any], Any] | None, record: Any) -> Any:
        return early_stop(record) if early_stop else None

    def task_eval(self, fn: Callable[[torch.nn.Module, Any], dict[str, Any]], model: torch.nn.Module,
                  tokenizer: Any) -> dict[str, Any]:
        return fn(model, tokenizer)

    def save_model(self, model: torch.nn.Module, save: Callable[[torch.nn.Module], Any]) -> None:
        save(model)

    def save_checkpoint(self, run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any, state: dict[str, Any]) -> None:
        save_checkpoint(run_dir, model, optimizer, scheduler, state)

    def load_checkpoint(self, run_dir: Path, checkpoint: Path, model: torch.nn.Module,
                        optimizer: torch.optim.Optimizer, scheduler: Any) -> tuple[dict[str, Any] | None, str | None]:
        # the newest checkpoint that loads; none: from scratch, the records past it dropped
        return load_newest_loadable(run_dir, model, optimizer, scheduler)


def join(device: str = "auto") -> World:
    """The world this process trains in: FSDP2 ranks under ``torchrun`` (``WORLD_SIZE`` > 1), else one process."""
    from tunescout.train.distributed.ranks import join_world

    return join_world(device) or OneProcess()
