"""Checkpoints: exact round trips, no code run on load, and a loadable checkpoint after a crash anywhere."""

from __future__ import annotations

import copy
import os
import pickle
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import tunescout.train.checkpoint as ckpt
from tunescout.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

PT_FILES = ["trainable.pt", "optimizer.pt", "scheduler.pt", "rng.pt"]


def _parts(seed: int = 0):
    """A two-layer model with one frozen tensor, AdamW and a LambdaLR: the loop's three objects."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 2))
    model[0].bias.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 / (1 + s))
    return model, optimizer, scheduler


def _train(model, optimizer, scheduler, steps: int = 1) -> None:
    for _ in range(steps):
        model(torch.randn(3, 4)).pow(2).sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)


def _save(run: Path, parts, step: int, **kw) -> Path:
    return save_checkpoint(run, *parts, {"step": step, "samples": 8 * step, "tokens": 0, "wall_s": 0.0}, **kw)


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def _draws() -> list:
    return [random.random(), random.gauss(0, 1), float(np.random.standard_normal()), float(np.random.rand()),
            torch.rand(4).tolist(), torch.randn(2).tolist()]


def _step_dirs(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").glob("step-*"))


# --- round trip ---

def test_round_trip_restores_weights_optimizer_scheduler_and_rng(tmp_path) -> None:
    parts = _parts()
    _train(*parts, steps=3)
    random.gauss(0, 1)  # Python and NumPy both cache a second gaussian: it must survive the round trip
    np.random.standard_normal()
    path = _save(tmp_path, parts, 3)
    assert path == tmp_path / "checkpoints" / "step-0000003" == latest_checkpoint(tmp_path)
    assert "0.bias" not in torch.load(path / "trainable.pt", weights_only=True)  # frozen tensors stay out
    saved_optim, saved_sched = copy.deepcopy(parts[1].state_dict()), parts[2].state_dict()
    after_save = _draws()
    _train(*parts)  # one more step, dropout included: what a resumed run must reproduce
    expected = _snapshot(parts[0])

    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    fresh = _parts(seed=1)  # other trainable weights; the frozen base comes from its source, as on resume
    with torch.no_grad():
        fresh[0][0].bias.copy_(parts[0][0].bias)
    frozen_bias = fresh[0][0].bias.clone()
    assert load_checkpoint(path, *fresh) == {"step": 3, "samples": 24, "tokens": 0, "wall_s": 0.0}
    assert fresh[2].state_dict() == saved_sched
    restored_optim = fresh[1].state_dict()
    assert restored_optim["param_groups"] == saved_optim["param_groups"]
    for key, values in saved_optim["state"].items():
        _assert_same(values, restored_optim["state"][key])
    assert _draws() == after_save
    _train(*fresh)
    torch.testing.assert_close(fresh[0][0].bias, frozen_bias, rtol=0, atol=0)  # not in the checkpoint
    expected["0.bias"] = frozen_bias
    _assert_same(_snapshot(fresh[0]), expected)


def test_rng_state_is_json_and_tensors_only(tmp_path) -> None:
    path = _save(tmp_path, _parts(), 1)
    plain = (path / "rng.json").read_text()
    assert '"python"' in plain and '"numpy"' in plain
    tensors = torch.load(path / "rng.pt", weights_only=True)
    assert isinstance(tensors["torch"], torch.Tensor)


# --- nothing runs on load ---

class _Plant:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def _plant(file: Path, marker: Path, writer: str) -> None:
    payload = {"state": _Plant(marker), "param_groups": []}
    if writer == "torch.save":
        torch.save(payload, file)
    else:
        file.write_bytes(pickle.dumps(payload, protocol=2))


def test_planted_payload_runs_when_unpickled(tmp_path) -> None:
    """The payload of the next test is live: plain unpickling does create the marker."""
    marker = tmp_path / "MARKER"
    _plant(tmp_path / "x.pkl", marker, "pickle")
    pickle.loads((tmp_path / "x.pkl").read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
@pytest.mark.parametrize("name", PT_FILES)
def test_a_planted_pickle_raises_and_runs_nothing(tmp_path, name, writer) -> None:
    path = _save(tmp_path / "run", _parts(), 1)
    marker = tmp_path / "MARKER"
    _plant(path / name, marker, writer)
    fresh = _parts(seed=1)
    before = _snapshot(fresh[0])
    with pytest.raises(ValueError, match=re.escape(f"{path / name}: not a safe tunescout checkpoint file")):
        load_checkpoint(path, *fresh)
    assert not marker.exists()
    _assert_same(_snapshot(fresh[0]), before)  # nothing was restored from a checkpoint with a bad file


@pytest.mark.parametrize(("name", "content"), [
    ("rng.json", b"\x80not json"),
    ("rng.json", b'{"python": {"version": 3, "state": [1, 2], "gauss_next": null}, "numpy": {}}'),
    ("state.json", b"[1, 2]"),
    ("trainable.pt", b"torn"),
])
def test_a_malformed_file_raises_naming_it(tmp_path, name, content) -> None:
    path = _save(tmp_path, _parts(), 1)
    (path / name).write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(str(path / name))):
        load_checkpoint(path, *_parts())


# --- crash safety ---

class _Crash(Exception):
    pass


class _Proxy:
    """A module whose chosen functions are replaced (patched into the checkpoint module only)."""

    def __init__(self, real, **replaced) -> None:
        self._real, self._replaced = real, replaced

    def __getattr__(self, name: str):
        return self._replaced.get(name) or getattr(self._real, name)


def _crash(*args, **kwargs):
    raise _Crash


def _partial_rmtree(path, ignore_errors=False):
    """Delete one file of a checkpoint folder, then die: a deletion cut short."""
    path = Path(path)
    if not path.exists():
        return
    next(p for p in path.iterdir() if p.is_file() and p.name != "state.json").unlink()
    raise _Crash


STAGES = {
    "tmp folder written": lambda mp: mp.setattr(ckpt, "os", _Proxy(os, rename=_crash)),
    "after rename": lambda mp: mp.setattr(ckpt, "_replace_pointer", _crash),
    "during pointer replace": lambda mp: mp.setattr(ckpt, "os", _Proxy(os, replace=_crash)),
    "during old-checkpoint deletion": lambda mp: mp.setattr(ckpt, "shutil", _Proxy(shutil, rmtree=_partial_rmtree)),
}


def _assert_loads_as(run: Path, snapshots: dict[int, dict]) -> int:
    """Assert the run's latest checkpoint loads and holds the weights saved at its step; return it."""
    path = latest_checkpoint(run)
    assert path is not None
    fresh = _parts(seed=7)
    step = load_checkpoint(path, *fresh)["step"]
    assert step in snapshots
    expected = dict(snapshots[step], **{"0.bias": fresh[0][0].bias})  # the frozen bias is not saved
    _assert_same(_snapshot(fresh[0]), expected)
    return step


def _two_saves_with_crash(run: Path, monkeypatch, inject) -> dict[int, dict]:
    """Save step 1, train, save step 2 with ``inject`` applied; the snapshots of both steps."""
    parts = _parts()
    _save(run, parts, 1)
    snapshots = {1: _snapshot(parts[0])}
    _train(*parts)
    snapshots[2] = _snapshot(parts[0])
    with monkeypatch.context() as mp:
        inject(mp)
        with pytest.raises(_Crash):
            _save(run, parts, 2)
    return snapshots


def _recover(run: Path) -> None:
    """What a resumed run does next: redo the steps after its checkpoint and save them."""
    parts = _parts(seed=7)
    step = load_checkpoint(latest_checkpoint(run), *parts)["step"]
    for next_step in range(step + 1, 4):
        _train(*parts)
        _save(run, parts, next_step)
    assert _step_dirs(run) == ["step-0000003"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-0000003"
    assert load_checkpoint(latest_checkpoint(run), *_parts())["step"] == 3


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_crash_at_each_stage_leaves_a_loadable_checkpoint(tmp_path, monkeypatch, stage) -> None:
    snapshots = _two_saves_with_crash(tmp_path, monkeypatch, STAGES[stage])
    step = _assert_loads_as(tmp_path, snapshots)
    assert step == (2 if stage == "during old-checkpoint deletion" else 1)
    _recover(tmp_path)


def test_a_crash_before_any_filesystem_operation_leaves_a_loadable_checkpoint(tmp_path, monkeypatch) -> None:
    """Crash before the k-th write, fsync, rename, replace or delete of a save, for every k."""
    names = {"os": ("fsync", "rename", "replace"), "shutil": ("rmtree",),
             ckpt.__name__: ("_write_torch", "_write_text", "_remove_checkpoint")}

    def inject(crash_at: int | None, calls: list[str]):
        def install(mp):
            def wrap(label, real):
                def op(*args, **kwargs):
                    calls.append(label)
                    if len(calls) - 1 == crash_at:
                        raise _Crash
                    return real(*args, **kwargs)
                return op

            mp.setattr(ckpt, "os", _Proxy(os, **{n: wrap(n, getattr(os, n)) for n in names["os"]}))
            mp.setattr(ckpt, "shutil", _Proxy(shutil, rmtree=wrap("rmtree", shutil.rmtree)))
            for n in names[ckpt.__name__]:
                mp.setattr(ckpt, n, wrap(n, getattr(ckpt, n)))
        return install

    counted: list[str] = []
    parts = _parts()
    _save(tmp_path / "count", parts, 1)
    with monkeypatch.context() as mp:
        inject(None, counted)(mp)
        _save(tmp_path / "count", parts, 2)
    assert {"rename", "replace", "_remove_checkpoint", "_write_torch"} <= set(counted)
    for k in range(len(counted)):
        run = tmp_path / f"crash-{k}"
        snapshots = _two_saves_with_crash(run, monkeypatch, inject(k, []))
        _assert_loads_as(run, snapshots)
        _recover(run)


# --- the pointer and its fallback ---

def test_a_pointer_to_a_missing_or_incomplete_folder_falls_back_to_the_newest_complete_one(tmp_path) -> None:
    parts = _parts()
    _save(tmp_path, parts, 1, keep=3)
    _save(tmp_path, parts, 2, keep=3)
    root = tmp_path / "checkpoints"
    (root / "step-0000009.tmp").mkdir()  # a half-written save, even with its marker, is ignored
    (root / "step-0000009.tmp" / "state.json").write_text('{"step": 9}')
    assert latest_checkpoint(tmp_path) == root / "step-0000002"
    for pointer in ("step-0000005", "../../elsewhere", "", "\x00\xff"):
        (root / "latest").write_text(pointer, encoding="latin-1")
        assert latest_checkpoint(tmp_path) == root / "step-0000002"
    (root / "latest").write_text("step-0000002")
    (root / "step-0000002" / "state.json").unlink()  # incomplete
    assert latest_checkpoint(tmp_path) == root / "step-0000001"
    (root / "latest").unlink()
    assert latest_checkpoint(tmp_path) == root / "step-0000001"
    shutil.rmtree(root / "step-0000001")
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "no-such-run") is None


def test_saving_the_same_step_twice_keeps_one_loadable_checkpoint(tmp_path, monkeypatch) -> None:
    parts = _parts()
    first = _save(tmp_path, parts, 4)
    saved = _snapshot(parts[0])
    files = {p.name: p.read_bytes() for p in first.iterdir()}
    _train(*parts)  # the loop saves again at the end with the same state; nothing may be rewritten
    writes = []
    monkeypatch.setattr(ckpt, "_write_torch", lambda *a: writes.append(a))
    assert _save(tmp_path, parts, 4) == first
    assert writes == []
    assert {p.name: p.read_bytes() for p in first.iterdir()} == files
    assert _step_dirs(tmp_path) == ["step-0000004"] and latest_checkpoint(tmp_path) == first
    assert _assert_loads_as(tmp_path, {4: saved}) == 4


def test_the_same_step_found_by_the_fallback_is_kept_and_the_pointer_repaired(tmp_path) -> None:
    parts = _parts()
    path = _save(tmp_path, parts, 4)
    (tmp_path / "checkpoints" / "latest").unlink()
    assert _save(tmp_path, parts, 4) == path
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == path.name


@pytest.mark.parametrize("keep", [1, 2])
def test_keep_leaves_the_newest_checkpoints(tmp_path, keep) -> None:
    parts = _parts()
    for step in (1, 2, 3, 4):
        _save(tmp_path, parts, step, keep=keep)
    assert _step_dirs(tmp_path) == [f"step-{s:07d}" for s in (1, 2, 3, 4)[-keep:]]
    assert latest_checkpoint(tmp_path).name == "step-0000004"
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_checkpoints_past_the_pointer_are_dropped_when_a_redone_step_is_saved(tmp_path) -> None:
    """A crash after renaming step 6 but before the pointer moved: the run resumes from step 3."""
    parts = _parts()
    _save(tmp_path, parts, 3, keep=3)
    _save(tmp_path, parts, 6, keep=3)
    (tmp_path / "checkpoints" / "latest").write_text("step-0000003")
    _train(*parts)
    redone = _snapshot(parts[0])
    _save(tmp_path, parts, 5, keep=3)
    assert _step_dirs(tmp_path) == ["step-0000003", "step-0000005"]
    assert _assert_loads_as(tmp_path, {5: redone}) == 5


def test_a_half_deleted_checkpoint_reads_as_incomplete(tmp_path, monkeypatch) -> None:
    """Its marker goes first: a deletion cut short must not leave a 'complete' folder with files missing."""
    parts = _parts()
    _save(tmp_path, parts, 3, keep=3)
    _save(tmp_path, parts, 6, keep=3)
    (tmp_path / "checkpoints" / "latest").write_text("step-0000003")  # step 6 is past the pointer
    monkeypatch.setattr(ckpt, "shutil", _Proxy(shutil, rmtree=_partial_rmtree))
    with pytest.raises(_Crash):
        _save(tmp_path, parts, 5, keep=3)  # dies deleting step 6
    (tmp_path / "checkpoints" / "latest").unlink()  # and the pointer is lost too
    assert latest_checkpoint(tmp_path).name == "step-0000005"


def test_keep_must_be_positive(tmp_path) -> None:
    with pytest.raises(ValueError, match="keep"):
        _save(tmp_path, _parts(), 1, keep=0)
