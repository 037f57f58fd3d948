"""Checkpoints that do not fit or do not load: refused before anything is restored, and a resume
that falls back to the previous checkpoint (or a fresh start) instead of failing forever."""

from __future__ import annotations

import copy
import json
import logging
import re
from pathlib import Path

import pytest
import torch
from test_checkpoint import _assert_same, _parts, _save, _snapshot, _train

from tunescout.train.checkpoint import (UNLOADABLE_SUFFIX, WORLD_FILE, latest_checkpoint, load_checkpoint,
                                        load_newest_loadable, resume_candidates)


def _state(parts) -> tuple[dict, dict, dict]:
    model, optimizer, scheduler = parts
    return _snapshot(model), copy.deepcopy(optimizer.state_dict()), copy.deepcopy(scheduler.state_dict())


def _assert_untouched(parts, before: tuple[dict, dict, dict]) -> None:
    weights, optim, sched = _state(parts)
    _assert_same(weights, before[0])
    assert optim["param_groups"] == before[1]["param_groups"] and optim["state"].keys() == before[1]["state"].keys()
    for key, values in before[1]["state"].items():
        _assert_same(optim["state"][key], values)
    assert sched == before[2]


def _rewrite(file: Path, edit) -> None:
    obj = torch.load(file, weights_only=True)
    edit(obj)
    torch.save(obj, file)


def _trained_parts(seed: int = 1):
    parts = _parts(seed=seed)
    _train(*parts, steps=2)  # optimizer state exists: a mismatch there must not slip through either
    return parts


# --- nothing restored from a checkpoint that does not fit ---

def test_a_wrong_shape_tensor_is_refused_before_any_weight_is_copied(tmp_path) -> None:
    path = _save(tmp_path, _trained_parts(0), 1)
    _rewrite(path / "trainable.pt", lambda w: w.update({"2.weight": torch.zeros(3, 8)}))  # after 0.weight
    parts = _trained_parts()
    before = _state(parts)
    message = re.escape(f"{path / 'trainable.pt'}: tensor '2.weight' has shape (3, 8), the model's parameter (2, 8)")
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path, *parts)
    _assert_untouched(parts, before)


def test_a_tensor_the_model_lacks_is_refused_before_any_weight_is_copied(tmp_path) -> None:
    path = _save(tmp_path, _trained_parts(0), 1)
    _rewrite(path / "trainable.pt", lambda w: w.update({"9.weight": torch.zeros(2)}))
    parts = _trained_parts()
    before = _state(parts)
    with pytest.raises(ValueError, match=re.escape(f"{path / 'trainable.pt'}: holds tensor '9.weight', which the "
                                                   "model has no parameter of")):
        load_checkpoint(path, *parts)
    _assert_untouched(parts, before)


def _wrong_moment(optim: dict) -> None:
    first = next(iter(optim["state"].values()))
    first["exp_avg"] = torch.zeros(5)


def _one_group_short(optim: dict) -> None:
    optim["param_groups"][0]["params"] = optim["param_groups"][0]["params"][:-1]


def _no_lr_lambdas(sched: dict) -> None:
    del sched["lr_lambdas"]


@pytest.mark.parametrize(("name", "edit", "match"), [
    ("optimizer.pt", _wrong_moment, r"optimizer state 'exp_avg' of parameter \d+ has shape \(5,\)"),
    ("optimizer.pt", _one_group_short, r"expected parameter groups of sizes \[3\]"),
    ("scheduler.pt", _no_lr_lambdas, r"expected lr_lambdas for 1 parameter groups"),
])
def test_optimizer_or_scheduler_state_that_does_not_fit_restores_nothing(tmp_path, name, edit, match) -> None:
    path = _save(tmp_path, _trained_parts(0), 1)
    _rewrite(path / name, edit)
    parts = _trained_parts()
    before = _state(parts)
    with pytest.raises(ValueError, match=re.escape(str(path / name)) + ".*" + match):
        load_checkpoint(path, *parts)
    _assert_untouched(parts, before)


# --- resuming from the newest checkpoint that loads ---

def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


DAMAGE = {
    "truncated weights": lambda p: _truncate(p / "trainable.pt"),
    "truncated optimizer": lambda p: _truncate(p / "optimizer.pt"),
    "bad JSON": lambda p: (p / "rng.json").write_text('{"python": '),
    "missing file": lambda p: (p / "scheduler.pt").unlink(),
    "wrong shape": lambda p: _rewrite(p / "trainable.pt", lambda w: w.update({"2.bias": torch.zeros(7)})),
}


def _two_checkpoints(run: Path, keep: int) -> tuple[dict[int, dict], Path]:
    parts = _parts()
    _train(*parts)
    _save(run, parts, 1, keep=keep)
    snapshots = {1: _snapshot(parts[0])}
    _train(*parts)
    newest = _save(run, parts, 2, keep=keep)
    snapshots[2] = _snapshot(parts[0])
    return snapshots, newest


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, damage) -> None:
    snapshots, newest = _two_checkpoints(tmp_path, keep=2)
    DAMAGE[damage](newest)
    parts = _parts(seed=7)
    with caplog.at_level(logging.WARNING, logger="tunescout.train.checkpoint"):
        state, note = load_newest_loadable(tmp_path, *parts)
    assert state["step"] == 1
    assert re.fullmatch(r"checkpoint step-0000002 did not load \(.*\); resumed from step-0000001", note, re.DOTALL), note
    assert str(newest) in note  # the file (or folder) at fault is named
    _assert_same(_snapshot(parts[0]), dict(snapshots[1], **{"0.bias": parts[0][0].bias}))
    assert "step-0000002 does not load, set aside as step-0000002.unloadable" in caplog.text
    root = tmp_path / "checkpoints"
    assert (root / f"step-0000002{UNLOADABLE_SUFFIX}").is_dir() and not newest.exists()
    assert (root / "latest").read_text().strip() == "step-0000001"
    assert resume_candidates(tmp_path) == [root / "step-0000001"]


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_with_keep_1_a_damaged_checkpoint_means_starting_over(tmp_path, damage) -> None:
    _, newest = _two_checkpoints(tmp_path, keep=1)
    DAMAGE[damage](newest)
    parts = _parts(seed=7)
    before = _state(parts)
    state, note = load_newest_loadable(tmp_path, *parts)
    assert state is None
    assert re.fullmatch(r"checkpoint step-0000002 did not load \(.*\); started over from step 0", note, re.DOTALL), note
    _assert_untouched(parts, before)
    assert latest_checkpoint(tmp_path) is None and not (tmp_path / "checkpoints" / "latest").exists()
    # the redone step 2 is saved for real, not mistaken for the checkpoint set aside
    _train(*parts, steps=2)
    redone = _snapshot(parts[0])
    assert _save(tmp_path, parts, 2) == newest
    fresh = _parts(seed=3)
    assert load_newest_loadable(tmp_path, *fresh) == ({"step": 2, "samples": 16, "tokens": 0, "wall_s": 0.0}, None)
    _assert_same(_snapshot(fresh[0]), dict(redone, **{"0.bias": fresh[0][0].bias}))


def test_every_damaged_checkpoint_is_tried_newest_first(tmp_path) -> None:
    parts = _parts()
    for step in (1, 2, 3):
        _save(tmp_path, parts, step, keep=3)
    for step in (2, 3):
        (tmp_path / "checkpoints" / f"step-{step:07d}" / "state.json").write_text("{")
    state, note = load_newest_loadable(tmp_path, *_parts(seed=7))
    assert state["step"] == 1
    assert note.startswith("checkpoint step-0000003 did not load (") and note.endswith("; resumed from step-0000001")
    assert "; checkpoint step-0000002 did not load (" in note


def test_a_loadable_newest_checkpoint_or_none_is_no_news(tmp_path) -> None:
    assert load_newest_loadable(tmp_path, *_parts()) == (None, None)
    _two_checkpoints(tmp_path, keep=2)
    state, note = load_newest_loadable(tmp_path, *_parts(seed=7))
    assert state["step"] == 2 and note is None


def test_a_sharded_checkpoint_is_not_mistaken_for_a_damaged_one(tmp_path) -> None:
    _, newest = _two_checkpoints(tmp_path, keep=2)
    (newest / WORLD_FILE).write_text(json.dumps({"world_size": 2}))
    with pytest.raises(ValueError, match="sharded checkpoint written by several ranks"):
        load_newest_loadable(tmp_path, *_parts(seed=7))
    assert newest.is_dir() and latest_checkpoint(tmp_path) == newest
