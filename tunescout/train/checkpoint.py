"""Resumable checkpoints: trainable weights, optimizer, scheduler, data position and RNG state.

Only trainable tensors are saved (for LoRA that is the adapter alone); the frozen base is
reloaded from its source on resume.

The invariant: a run killed at any moment, even in the middle of a save, leaves at least one
loadable checkpoint (the new one or the previous one), never none. The save order gives it:

1. write every file into ``step-N.tmp``, each fsynced, ``state.json`` (the completion marker)
   last;
2. rename the folder to ``step-N`` and fsync ``checkpoints/``;
3. replace the pointer ``checkpoints/latest`` atomically (temp file in the same folder, fsync,
   ``os.replace``): it names either the old checkpoint or the new one, never half of either;
4. only then delete older checkpoints, their marker first, so a half-deleted folder reads as
   incomplete rather than as a checkpoint with files missing. The folder the pointer names is
   never deleted.

Deleting the previous checkpoint before the pointer moves (as a plain "write, then clean up"
does) opens a window where a crash leaves nothing to resume from; renaming into place without
fsync lets a power cut leave a folder whose files are empty. :func:`latest_checkpoint` trusts
the pointer when it names a complete folder and otherwise falls back to the newest complete
``step-*`` folder, ignoring ``*.tmp`` leftovers.

Nothing is unpickled on load: the RNG states of Python and NumPy are JSON, every ``.pt`` file
is read with ``torch.load(weights_only=True)`` (tensors, containers and numbers only), and a file
that does not pass raises :class:`ValueError` naming it instead of running anything. Every file is
checked against the model, optimizer and scheduler (names, shapes, group sizes) before anything is
restored, so a checkpoint that fails to load leaves them as they were.

A checkpoint can still be unloadable (a disk that lost its tail, a file torn by a copy), and one
that fails every resume would keep a run from ever progressing. :func:`load_newest_loadable` is
the resume: it falls back to the previous complete checkpoint, else to a fresh start, sets the
unloadable one aside (``step-N.unloadable``, never resumed from nor mistaken for a redone step N)
and says so.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["MARKER", "UNLOADABLE_SUFFIX", "WORLD_FILE", "begin_checkpoint", "checkpoint_of_step", "commit_checkpoint",
           "latest_checkpoint", "load_checkpoint", "load_newest_loadable", "load_tensor_file", "read_rng_state",
           "resume_candidates", "save_checkpoint", "write_rng_state", "write_tensor_file"]

log = logging.getLogger("tunescout.train.checkpoint")

POINTER = "latest"
MARKER = "state.json"
"""Written last into a checkpoint, removed first when one is deleted: its presence means complete."""
WORLD_FILE = "world.json"
"""Present in a checkpoint written by several ranks (``torch.distributed.checkpoint``, see
:mod:`tunescout.train.distributed`): it names their number, the only one it resumes on."""
_STEP_DIR = re.compile(r"step-(\d+)")
UNLOADABLE_SUFFIX = ".unloadable"
"""Appended to a checkpoint folder that did not load when resuming (kept to inspect; ``--restart`` removes it)."""


# --- durable writes ---

def _fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` survive a power cut (a no-op where unsupported)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_torch(obj: Any, path: Path) -> None:
    with path.open("wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def _write_text(text: str, path: Path) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _replace_pointer(root: Path, name: str) -> None:
    """Point ``root/latest`` at ``name``: write a temp file beside it, fsync, ``os.replace``."""
    tmp = root / f"{POINTER}.tmp"
    _write_text(name + "\n", tmp)
    os.replace(tmp, root / POINTER)
    _fsync_dir(root)


def _remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint folder, its marker first: a crash midway leaves it incomplete, not torn."""
    (path / MARKER).unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)


# --- finding checkpoints ---

def _step_of(path: Path) -> int | None:
    """N for a folder named ``step-N`` (a ``step-N.tmp`` or anything else gives None)."""
    match = _STEP_DIR.fullmatch(path.name)
    return int(match.group(1)) if match else None


def _is_complete(path: Path) -> bool:
    return _step_of(path) is not None and (path / MARKER).is_file()


def _step_dirs(root: Path) -> list[Path]:
    """Every ``step-N`` folder under ``root`` (complete or not), oldest first."""
    dirs = [p for p in root.glob("step-*") if p.is_dir() and _step_of(p) is not None]
    return sorted(dirs, key=_step_of)


def _pointed(root: Path) -> Path | None:
    """The folder the pointer names, if the pointer holds a plain ``step-N`` name."""
    try:
        name = (root / POINTER).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return root / name if _STEP_DIR.fullmatch(name) else None


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None.

    Args:
        run_dir: the run directory (checkpoints live in its ``checkpoints/`` folder).

    Returns:
        The folder ``checkpoints/latest`` names when it is complete; otherwise (pointer missing,
        unreadable, or naming a missing or incomplete folder) the complete ``step-N`` folder
        with the largest N; None when there is no complete checkpoint.
    """
    root = Path(run_dir) / "checkpoints"
    pointed = _pointed(root)
    if pointed is not None and _is_complete(pointed):
        return pointed
    complete = [p for p in _step_dirs(root) if _is_complete(p)]
    if complete:
        log.warning("%s does not name a complete checkpoint; using %s", root / POINTER, complete[-1])
        return complete[-1]
    return None


# --- RNG state without pickle ---

def _unsafe(file: Path, why: str) -> ValueError:
    return ValueError(f"{file}: not a safe tunescout checkpoint file ({why})")


def _rng_json() -> dict[str, Any]:
    """Python's and NumPy's global RNG states as plain JSON values."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {"name": name, "keys": [int(k) for k in keys], "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }


def _rng_tensors() -> dict[str, Any]:
    """Torch's CPU and CUDA generator states: byte tensors, loadable with ``weights_only``."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _parse_rng(plain: dict[str, Any], tensors: dict[str, Any], where: Path,
               stem: str = "rng") -> tuple[Any, Any, Any, Any]:
    """The four saved RNG states, each tried on a private generator so that a malformed one
    raises here, before any global state has changed."""
    try:
        py, npy = plain["python"], plain["numpy"]
        py_state = (py["version"], tuple(py["state"]), py["gauss_next"])
        np_state = (npy["name"], np.asarray(npy["keys"], dtype=np.uint32), npy["pos"], npy["has_gauss"],
                    npy["cached_gaussian"])
        random.Random().setstate(py_state)
        np.random.RandomState().set_state(np_state)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise _unsafe(where / f"{stem}.json", f"malformed RNG state: {exc!r}") from exc
    try:
        torch.Generator().set_state(tensors["torch"])
    except (TypeError, RuntimeError) as exc:
        raise _unsafe(where / f"{stem}.pt", f"malformed torch RNG state: {exc!r}") from exc
    return py_state, np_state, tensors["torch"], tensors.get("cuda")


def _set_rng(py_state: Any, np_state: Any, torch_state: torch.Tensor, cuda_states: Any) -> None:
    random.setstate(py_state)
    np.random.set_state(np_state)
    torch.set_rng_state(torch_state)
    if cuda_states is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)


# --- save ---

def save_checkpoint(
    run_dir: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    keep: int = 1,
) -> Path:
    """Write ``checkpoints/step-NNNNNNN`` under ``run_dir`` and keep the newest ``keep`` of them.

    The write order (module docstring) leaves a loadable checkpoint after a crash at any point.

    Args:
        run_dir: the run directory.
        model: its trainable parameters are saved.
        optimizer: saved with its ``state_dict``.
        scheduler: an LR scheduler, saved with its ``state_dict``.
        state: JSON-serialisable progress; ``state["step"]`` names the checkpoint.
        keep: how many checkpoints to keep, the new one included (at least 1).

    Returns:
        The checkpoint folder. When the newest checkpoint (the one :func:`latest_checkpoint`
        returns) already holds this step, as when a run stopped on a checkpoint step saves
        again at its end, that folder is returned unchanged.

    Raises:
        ValueError: ``keep`` is below 1.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    current = checkpoint_of_step(run_dir, state["step"])
    if current is not None:
        return current
    tmp = begin_checkpoint(run_dir, state["step"])
    weights = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    _write_torch(weights, tmp / "trainable.pt")
    _write_torch(optimizer.state_dict(), tmp / "optimizer.pt")
    _write_torch(scheduler.state_dict(), tmp / "scheduler.pt")
    write_rng_state(tmp)
    return commit_checkpoint(run_dir, tmp, state, keep)


# --- the save protocol in parts (a sharded save writes its files in between, from every rank) ---

def checkpoint_of_step(run_dir: str | Path, step: int) -> Path | None:
    """The newest checkpoint when it already holds ``step`` (the pointer repaired if it was found
    by the fallback), else None: a run stopped on a checkpoint step saves again at its end."""
    root = Path(run_dir) / "checkpoints"
    current = latest_checkpoint(run_dir)
    if current is not None and _step_of(current) == step:
        if _pointed(root) != current:  # found by the fallback: make the pointer say so
            _replace_pointer(root, current.name)
        return current
    return None


def begin_checkpoint(run_dir: str | Path, step: int) -> Path:
    """A fresh, empty staging folder ``checkpoints/step-N.tmp`` to write a checkpoint of ``step`` into."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"step-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # a leftover of an earlier crash
    tmp.mkdir()
    return tmp


def commit_checkpoint(run_dir: str | Path, staging: Path, state: dict[str, Any], keep: int = 1) -> Path:
    """Complete a staged checkpoint (steps 1–4 of the module docstring, from the marker on).

    Args:
        run_dir: the run directory.
        staging: the folder :func:`begin_checkpoint` returned, with every other file written.
        state: JSON-serialisable progress, written as the completion marker.
        keep: how many checkpoints to keep, the new one included (at least 1).

    Returns:
        The checkpoint folder ``checkpoints/step-N``.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    root = Path(run_dir) / "checkpoints"
    final = root / f"step-{state['step']:07d}"
    _write_text(json.dumps(state, indent=2), staging / MARKER)  # last: the folder is complete
    _fsync_dir(staging)

    if final.exists():  # not the newest checkpoint (see above), e.g. left by a crash before the pointer moved
        _remove_checkpoint(final)
    os.rename(staging, final)
    _fsync_dir(root)
    _replace_pointer(root, final.name)

    # Only now is anything older deleted. Folders past this step belong to a timeline the
    # pointer has left (written before a crash, then redone from an earlier checkpoint).
    older = [p for p in _step_dirs(root) if _step_of(p) < state["step"] and _is_complete(p)]
    kept = {final, *older[max(0, len(older) - (keep - 1)):]} if keep > 1 else {final}
    for path in _step_dirs(root):
        if path not in kept:
            _remove_checkpoint(path)
    for leftover in root.glob("step-*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)
    return final


def write_rng_state(folder: Path, stem: str = "rng") -> None:
    """Write this process's RNG states as ``<stem>.pt`` (torch) and ``<stem>.json`` (Python, NumPy)."""
    _write_torch(_rng_tensors(), folder / f"{stem}.pt")
    _write_text(json.dumps(_rng_json()), folder / f"{stem}.json")


def write_tensor_file(obj: Any, path: Path) -> None:
    """``torch.save`` tensors, containers and numbers to ``path``, fsynced (loadable by :func:`load_tensor_file`)."""
    _write_torch(obj, path)


# --- load ---

def _load_torch(file: Path) -> Any:
    """``torch.load`` restricted to tensors, containers and numbers; anything else raises."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # UnpicklingError for a forbidden global, others for a torn file
        raise _unsafe(file, f"{type(exc).__name__}: {_torch_reason(exc)}") from exc


def _torch_reason(exc: Exception) -> str:
    """What torch found, without its advice to retry with ``weights_only=False``."""
    parts = [p.strip() for p in str(exc).split("\n\n") if p.strip()]
    if len(parts) > 2 and parts[0].startswith("Weights only load failed"):
        return parts[1]
    return parts[0] if parts else "unreadable"


def _load_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _unsafe(file, f"not JSON: {exc}") from exc


def _expect(ok: bool, file: Path, what: str) -> None:
    if not ok:
        raise _unsafe(file, f"expected {what}")


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def _check_weights(weights: dict[str, torch.Tensor], params: dict[str, torch.nn.Parameter], file: Path) -> None:
    """Every saved tensor names a parameter of the model and has its shape, and every trainable
    parameter is saved: all checked before any is copied, so a mismatch leaves the model as it was."""
    for name, tensor in weights.items():
        if name not in params:
            raise ValueError(f"{file}: holds tensor {name!r}, which the model has no parameter of: the checkpoint "
                             "is of another model (resume with the model it was trained from, or --restart)")
        if tensor.shape != params[name].shape:
            raise ValueError(f"{file}: tensor {name!r} has shape {_shape(tensor)}, the model's parameter "
                             f"{_shape(params[name])}: the checkpoint is of another model, or damaged (resume with "
                             "the model it was trained from, or --restart)")
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    if missing:
        raise ValueError(f"{file}: lacks trainable parameters, e.g. {missing[:3]} (another method or model; "
                         "resume with the config it was trained with, or --restart)")


def _check_optimizer(saved: dict[str, Any], optimizer: torch.optim.Optimizer, file: Path) -> None:
    """The saved state fits the optimizer: ``load_state_dict`` checks group sizes only after the
    weights are copied, and state of the wrong shape fails only at the next step."""
    groups = optimizer.param_groups
    sizes = [len(g["params"]) for g in groups]
    saved_groups = saved["param_groups"]
    _expect(isinstance(saved_groups, list) and len(saved_groups) == len(groups)
            and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in saved_groups)
            and [len(g["params"]) for g in saved_groups] == sizes, file, f"parameter groups of sizes {sizes}")
    params = {pid: param for g, group in zip(saved_groups, groups) for pid, param in zip(g["params"], group["params"])}
    _expect(isinstance(saved["state"], dict), file, "a dict of per-parameter state")
    for pid, entry in saved["state"].items():
        _expect(pid in params and isinstance(entry, dict), file, f"state of the groups' parameters, not of {pid!r}")
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != params[pid].shape:
                raise ValueError(f"{file}: optimizer state {key!r} of parameter {pid} has shape {_shape(value)}, the "
                                 f"parameter {_shape(params[pid])} (a checkpoint of another model, or damaged)")


def _check_scheduler(saved: Any, scheduler: Any, file: Path) -> None:
    """The saved state fits the scheduler: ``load_state_dict`` copies it into the scheduler's
    attributes, so a foreign or short one would break it only later."""
    _expect(isinstance(saved, dict) and isinstance(saved.get("last_epoch"), int) and "optimizer" not in saved,
            file, "a scheduler state_dict with an integer last_epoch")
    current = scheduler.state_dict()
    for key in ("lr_lambdas", "base_lrs", "_last_lr"):
        if key in current and (key in saved or key == "lr_lambdas"):  # LambdaLR pops lr_lambdas: it must be there
            _expect(isinstance(saved.get(key), list) and len(saved[key]) == len(current[key]), file,
                    f"{key} for {len(current[key])} parameter groups")


def _refuse_sharded(path: Path) -> None:
    if (path / WORLD_FILE).exists():
        raise ValueError(f"{path} is a sharded checkpoint written by several ranks ({WORLD_FILE}): resume it with "
                         "torchrun on the same number of processes (see tunescout.train.distributed)")


def load_checkpoint(
    path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any]:
    """Restore a checkpoint in place and return its saved state (step, samples, tokens, ...).

    Every file is read and checked (against the model, optimizer and scheduler too) before
    anything is restored, so a checkpoint with a bad file leaves the model, optimizer, scheduler
    and RNGs as they were.

    Args:
        path: a checkpoint folder (e.g. from :func:`latest_checkpoint`).
        model: receives the saved trainable parameters.
        optimizer: receives the saved optimizer state.
        scheduler: receives the saved scheduler state.

    Returns:
        The ``state`` dict given to :func:`save_checkpoint`.

    Raises:
        ValueError: a file holds anything but tensors, containers and numbers (e.g. a pickled
            object), is torn or malformed, or does not fit: a tensor the model has no parameter
            of or of another shape (the file, the tensor and both shapes named), a trainable
            parameter missing, optimizer or scheduler state of other groups.
        FileNotFoundError: a file of the checkpoint is missing.
    """
    path = Path(path)
    _refuse_sharded(path)
    files = {name: path / name for name in ("trainable.pt", "optimizer.pt", "scheduler.pt", "rng.pt")}
    weights, optim_state, sched_state, rng_tensors = (_load_torch(f) for f in files.values())
    rng_plain = _load_json(path / "rng.json")
    state = _load_json(path / MARKER)

    _expect(isinstance(weights, dict) and all(isinstance(t, torch.Tensor) for t in weights.values()),
            files["trainable.pt"], "a dict of tensors")
    _expect(isinstance(optim_state, dict) and {"state", "param_groups"} <= optim_state.keys(),
            files["optimizer.pt"], "an optimizer state_dict")
    _expect(isinstance(rng_tensors, dict) and isinstance(rng_tensors.get("torch"), torch.Tensor),
            files["rng.pt"], "a dict with the torch RNG state tensor")
    _expect(isinstance(rng_plain, dict) and {"python", "numpy"} <= rng_plain.keys(),
            path / "rng.json", "python and numpy RNG states")
    _expect(isinstance(state, dict) and isinstance(state.get("step"), int), path / MARKER, "a dict with 'step'")
    params = dict(model.named_parameters())
    _check_weights(weights, params, files["trainable.pt"])
    _check_optimizer(optim_state, optimizer, files["optimizer.pt"])
    _check_scheduler(sched_state, scheduler, files["scheduler.pt"])
    rng = _parse_rng(rng_plain, rng_tensors, path)

    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    optimizer.load_state_dict(optim_state)
    scheduler.load_state_dict(sched_state)
    _set_rng(*rng)
    return state


# --- resume: the newest checkpoint that loads ---

_UNLOADABLE = (ValueError, FileNotFoundError)
"""What :func:`load_checkpoint` raises for a checkpoint that is damaged or does not fit, having
restored nothing (an I/O or other error propagates: trying an older checkpoint would not help)."""


def resume_candidates(run_dir: str | Path) -> list[Path]:
    """The complete checkpoints a run may resume from, best first: :func:`latest_checkpoint`,
    then the older complete ones, newest first. Folders past the newest belong to a timeline the
    pointer has left (see :func:`commit_checkpoint`) and are not candidates."""
    newest = latest_checkpoint(run_dir)
    if newest is None:
        return []
    older = [p for p in _step_dirs(newest.parent) if _step_of(p) < _step_of(newest) and _is_complete(p)]
    return [newest, *reversed(older)]


def _set_aside(path: Path) -> str:
    """Rename a checkpoint that did not load to ``step-N.unloadable``: never a resume candidate
    again, and a redone save of step N is not mistaken for it (:func:`checkpoint_of_step`)."""
    aside = path.with_name(path.name + UNLOADABLE_SUFFIX)
    try:
        shutil.rmtree(aside, ignore_errors=True)
        os.rename(path, aside)
        _fsync_dir(path.parent)
    except OSError as exc:
        log.warning("could not set %s aside (%s); it is skipped this time only", path, exc)
        return path.name
    return aside.name


def load_newest_loadable(
    run_dir: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> tuple[dict[str, Any] | None, str | None]:
    """Resume a run from its newest checkpoint that loads, instead of failing on one that does not.

    A checkpoint that does not load (a corrupt or truncated file, malformed JSON, tensors of the
    wrong shape: anything :func:`load_checkpoint` rejects having restored nothing) is set aside
    as ``step-N.unloadable``, with a warning, and the previous complete checkpoint is tried;
    when none loads, the run starts over. The pointer is moved to the checkpoint that loaded (or
    removed), so a crash before the next save resumes the same way. With ``keep=1`` (what the
    training loop saves with) there is usually no previous checkpoint, and a damaged one means
    starting over.

    Call it on the one process that writes the run directory (it renames folders).

    Args:
        run_dir: the run directory.
        model, optimizer, scheduler: as for :func:`load_checkpoint`; left as they were when
            nothing loads.

    Returns:
        ``(state, note)``: the loaded checkpoint's state, or None when none loaded (train from
        step 0: the caller must drop the run's records past step 0); ``note`` None when the
        newest checkpoint loaded (or there is none), else what happened, for the log and the
        run's result, e.g. ``"checkpoint step-0000040 did not load (...); resumed from
        step-0000020"`` or ``"...; started over from step 0"``.

    Raises:
        ValueError: the newest checkpoint is a sharded one (it resumes under torchrun only; it
            is not damaged).
    """
    root = Path(run_dir) / "checkpoints"
    failed: list[str] = []
    for path in resume_candidates(run_dir):
        _refuse_sharded(path)
        try:
            state = load_checkpoint(path, model, optimizer, scheduler)
        except _UNLOADABLE as exc:
            log.warning("checkpoint %s does not load, set aside as %s: %s", path, _set_aside(path), exc)
            failed.append(f"checkpoint {path.name} did not load ({exc})")
            continue
        if failed:
            _replace_pointer(root, path.name)
        return state, "; ".join([*failed, f"resumed from {path.name}"]) if failed else None
    if failed:
        (root / POINTER).unlink(missing_ok=True)
        _fsync_dir(root)
    return None, "; ".join([*failed, "started over from step 0"]) if failed else None


def load_tensor_file(file: Path) -> Any:
    """Read a file of tensors, containers and numbers (``weights_only``); anything else raises ValueError."""
    return _load_torch(file)


def read_rng_state(folder: Path, stem: str = "rng") -> Callable[[], None]:
    """Read and check the RNG states :func:`write_rng_state` wrote; nothing is restored yet.

    Returns:
        A function that restores them, to be called once every other file of a checkpoint has
        been read and checked too (a bad file then leaves every state as it was).

    Raises:
        ValueError: a file is not a safe, well-formed RNG state.
    """
    tensors, plain = _load_torch(folder / f"{stem}.pt"), _load_json(folder / f"{stem}.json")
    _expect(isinstance(tensors, dict) and isinstance(tensors.get("torch"), torch.Tensor),
            folder / f"{stem}.pt", "a dict with the torch RNG state tensor")
    _expect(isinstance(plain, dict) and {"python", "numpy"} <= plain.keys(), folder / f"{stem}.json",
            "python and numpy RNG states")
    rng = _parse_rng(plain, tensors, folder, stem)
    return lambda: _set_rng(*rng)
