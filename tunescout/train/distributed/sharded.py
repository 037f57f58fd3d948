"""Checkpoints of a sharded run: ``torch.distributed.checkpoint`` (DCP) inside the usual atomic save.

The folder protocol is the single-process one (:mod:`tunescout.train.checkpoint`): files go into
``step-N.tmp``, the marker last, then rename and pointer, so a crash anywhere leaves a loadable
checkpoint. What differs is who writes what:

- every rank writes its shard of the trainable weights and the optimizer state with DCP
  (``dcp/``, one ``.distcp`` file per rank, plus ``.metadata``) and its own RNG state
  (``rng-<rank>.pt`` / ``.json``: ranks draw different dropout masks);
- after a barrier rank 0 writes the scheduler, the optimizer's hyperparameters
  (``param_groups.json``) and ``world.json`` (the number of ranks), then commits the folder.

Pickle-free on load, like the rest: only tensors go into DCP (its loader unpickles non-tensor
items with ``weights_only=False``, so a checkpoint holding any is refused), and DCP's
``.metadata`` — a pickle — is read by an unpickler that admits only DCP's own metadata classes,
torch sizes, dtypes and layouts, and paths. A checkpoint resumes on as many ranks as wrote it
and no other (the shard layout and the per-rank RNG states are per rank).
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from collections.abc import Callable
from typing import Any, Protocol

import torch

from tunescout.train.checkpoint import (
    MARKER,
    WORLD_FILE,
    begin_checkpoint,
    checkpoint_of_step,
    commit_checkpoint,
    load_tensor_file,
    read_rng_state,
    write_rng_state,
    write_tensor_file,
)

__all__ = ["Ranks", "load_sharded_checkpoint", "save_sharded_checkpoint"]


class Ranks(Protocol):
    """What a sharded checkpoint needs of the processes writing it (``FsdpRanks`` is one)."""

    rank: int
    size: int

    def barrier(self) -> None: ...

    def on_main(self, fn: Callable[[], Any]) -> Any: ...


DCP_DIR = "dcp"
GROUPS_FILE = "param_groups.json"


def _options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # Trainable tensors only, as in single-process checkpoints: a LoRA base is reloaded from its source.
    return StateDictOptions(ignore_frozen_params=True)


def _tensors_only(tree: Any, where: str) -> None:
    """Refuse anything but tensors in what goes to DCP (see the module docstring)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            _tensors_only(value, f"{where}.{key}")
    elif not isinstance(tree, torch.Tensor):
        raise TypeError(f"{where} is a {type(tree).__name__}, not a tensor: sharded checkpoints hold tensors only")


def _plain_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Optimizer hyperparameters as JSON values (tuples become lists)."""
    out = []
    for group in groups:
        plain = {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()}
        json.dumps(plain)  # fails here, before anything is written, on a value JSON cannot hold
        out.append(plain)
    return out


def save_sharded_checkpoint(world: Ranks, run_dir: str | Path, model: torch.nn.Module,
                            optimizer: torch.optim.Optimizer, scheduler: Any, state: dict[str, Any],
                            keep: int = 1) -> Path:
    """Write ``checkpoints/step-N`` of a sharded run (collective: every rank calls it).

    Args:
        world: the run's ranks.
        run_dir: the run directory (on a filesystem every rank sees).
        model: the FSDP-wrapped model; its trainable parameters are saved, sharded.
        optimizer: its state is saved, sharded; its hyperparameters as JSON.
        scheduler: an LR scheduler (the same on every rank), saved by rank 0.
        state: JSON-serialisable progress; ``state["step"]`` names the checkpoint.
        keep: how many checkpoints to keep, the new one included.

    Returns:
        The checkpoint folder (the existing one when the newest checkpoint already holds this step).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    step = state["step"]
    existing = world.on_main(lambda: checkpoint_of_step(run_dir, step))
    if existing is not None:
        return existing
    staging = world.on_main(lambda: begin_checkpoint(run_dir, step))
    model_state, optim_state = get_state_dict(model, optimizer, options=_options())
    payload = {"model": model_state, "optim": optim_state["state"]}
    _tensors_only(payload, "checkpoint")
    dcp.save(payload, checkpoint_id=staging / DCP_DIR)
    write_rng_state(staging, f"rng-{world.rank}")
    world.barrier()  # every rank's files are on disk before rank 0 marks the folder complete

    def finish() -> Path:
        write_tensor_file(scheduler.state_dict(), staging / "scheduler.pt")
        (staging / GROUPS_FILE).write_text(json.dumps(_plain_groups(optim_state["param_groups"]), indent=2))
        world_file = {"world_size": world.size, "format": "torch.distributed.checkpoint"}
        (staging / WORLD_FILE).write_text(json.dumps(world_file))
        return commit_checkpoint(run_dir, staging, state, keep)

    return world.on_main(finish)


class _MetadataUnpickler(pickle.Unpickler):
    """Admits the globals a DCP ``.metadata`` file is made of, and nothing else."""

    _MODULES = ("torch.distributed.checkpoint.metadata",)
    _NAMES = {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
              ("torch.serialization", "_get_layout"), ("collections", "OrderedDict"),
              ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"),
              ("pathlib", "PureWindowsPath"), ("pathlib", "Path")}

    def find_class(self, module: str, name: str) -> Any:
        if module in self._MODULES or (module, name) in self._NAMES:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), (torch.dtype, torch.memory_format)):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in checkpoint metadata")


def _safe_reader(path: Path) -> Any:
    """A DCP ``FileSystemReader`` whose metadata is read by :class:`_MetadataUnpickler`."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, StorageMeta

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            file = path / ".metadata"
            try:
                metadata = _MetadataUnpickler(io.BytesIO(file.read_bytes())).load()
            except FileNotFoundError:
                raise
            except Exception as exc:
                raise ValueError(f"{file}: not a safe tunescout checkpoint file ({type(exc).__name__}: {exc})") from exc
            if any(isinstance(md, BytesStorageMetadata) for md in metadata.state_dict_metadata.values()):
                raise ValueError(f"{file}: not a safe tunescout checkpoint file (holds pickled non-tensor items)")
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(path)


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{file}: not a safe tunescout checkpoint file (not JSON: {exc})") from exc


def load_sharded_checkpoint(world: Ranks, path: str | Path, model: torch.nn.Module,
                            optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any]:
    """Restore a sharded checkpoint in place on every rank; return its saved state (collective).

    Every small file is read and checked before DCP loads the tensors, so a malformed one
    leaves the run as it was.

    Raises:
        ValueError: the checkpoint was written by another number of ranks, or by a single process,
            or a file is unsafe or malformed.
        FileNotFoundError: a file of the checkpoint is missing.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    path = Path(path)
    if not (path / WORLD_FILE).exists():
        raise ValueError(f"{path} was written by a single process: resume it without torchrun "
                         f"(a checkpoint resumes on as many ranks as wrote it, here 1, not {world.size})")
    written_by = _read_json(path / WORLD_FILE).get("world_size")
    if written_by != world.size:
        raise ValueError(f"{path} was written by {written_by} ranks and resumes on {written_by} only, not "
                         f"{world.size}: run torchrun --nproc_per_node={written_by}")
    state = _read_json(path / MARKER)
    groups = _read_json(path / GROUPS_FILE)
    sched_state = load_tensor_file(path / "scheduler.pt")
    if not (isinstance(state, dict) and isinstance(state.get("step"), int)):
        raise ValueError(f"{path / MARKER}: not a safe tunescout checkpoint file (expected a dict with 'step')")
    if not (isinstance(groups, list) and all(isinstance(g, dict) and "params" in g for g in groups)):
        raise ValueError(f"{path / GROUPS_FILE}: not a safe tunescout checkpoint file (expected optimizer groups)")
    if not isinstance(sched_state, dict):
        raise ValueError(f"{path / 'scheduler.pt'}: not a safe tunescout checkpoint file (expected a state_dict)")
    restore_rng = read_rng_state(path, f"rng-{world.rank}")

    model_state, optim_state = get_state_dict(model, optimizer, options=_options())
    payload = {"model": model_state, "optim": optim_state["state"]}
    dcp.load(payload, storage_reader=_safe_reader(path / DCP_DIR))
    groups = [{k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()} for g in groups]
    set_state_dict(model, optimizer, model_state_dict=payload["model"],
                   optim_state_dict={"state": payload["optim"], "param_groups": groups}, options=_options())
    scheduler.load_state_dict(sched_state)
    restore_rng()
    return state
