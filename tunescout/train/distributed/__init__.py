"""One run on several processes: PyTorch FSDP2, started by ``torchrun`` or ``accelerate launch``.

``torchrun --nproc_per_node=N --no-python tunescout train run.yaml`` trains one run on N
processes; :func:`~tunescout.train.loop.train` finds the ranks in the launcher's environment
(``WORLD_SIZE`` > 1, ``RANK``, ``LOCAL_RANK``) and nothing else changes for a single process.

- **What is split**: each effective batch's samples are dealt to the ranks by length (balanced
  tokens) and each rank packs its share with the single-process plan; the loss-token count of
  the whole batch is all-reduced, so the loss is the global token mean and the gradient the
  single-process one (:mod:`~tunescout.train.distributed.ranks`). The model is sharded with
  ``fully_shard`` per transformer block, for full fine-tuning and LoRA alike.
- **Rank 0** alone locks and prepares the run directory, writes telemetry, ``eval.jsonl``,
  ``result.json``, ``run.json`` and the saved model (a ``save_pretrained`` folder or adapter from
  a gathered replica), calls the early-stop hook (its verdict is broadcast) and ``task_eval``.
- **Checkpoints** are ``torch.distributed.checkpoint`` shards inside the usual atomic folder
  (:mod:`~tunescout.train.distributed.sharded`); they resume on the same number of ranks only.
- From an ordinary process, :func:`spawn_trial` starts the ranks and bridges the early-stop
  hook back (:mod:`~tunescout.train.distributed.spawn`).
"""

from tunescout.train.distributed.ranks import TIMEOUT_ENV, FsdpRanks, RankEnv, check_world_size, join_world, rank_env
from tunescout.train.distributed.sharded import load_sharded_checkpoint, save_sharded_checkpoint
from tunescout.train.distributed.split import Share, deal_samples, shard_model
from tunescout.train.distributed.spawn import TaskEvalSpec, run_spawned_rank, spawn_trial

__all__ = ["TIMEOUT_ENV", "FsdpRanks", "RankEnv", "Share", "TaskEvalSpec", "check_world_size", "deal_samples",
           "join_world", "load_sharded_checkpoint", "rank_env", "run_spawned_rank", "save_sharded_checkpoint",
           "shard_model", "spawn_trial"]
