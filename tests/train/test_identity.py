"""A run's identity (what can change its result), the resume check, the run-directory lock."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunescout.config import ConfigError, DataSource, LoraConfig, TrainConfig
from tunescout.data import digest
from tunescout.demo.tasks import make_rows, write_jsonl
from tunescout.train import train
from tunescout.train.identity import (ADDED_KEYS, NON_RESULT_KEYS, ResumeMismatch, config_hash, identity_diff,
                                       run_identity)
from tunescout.train.rundir import RunDirLocked, lock_run_dir


@pytest.fixture()
def data_file(tmp_path: Path) -> Path:
    return write_jsonl(make_rows("arithmetic", 24, seed=0), tmp_path / "data" / "arithmetic.jsonl")


def _config(model: Path, data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model=str(model), data=[DataSource(str(data))], batch_size=8, max_tokens_per_micro_batch=256,
                max_length=64, learning_rate=1e-3, max_steps=3, checkpoint_every=1, output_dir=str(out),
                progress=False)
    return TrainConfig.of(**{**base, **kw})


def test_non_result_keys_are_fields_and_left_out(data_file: Path) -> None:
    fields = set(TrainConfig.of().to_dict())  # every setting, by its flat name
    assert set(NON_RESULT_KEYS) <= fields
    config = TrainConfig.of(model="m", data=[DataSource(str(data_file))])
    identity = run_identity(config)
    assert not set(NON_RESULT_KEYS) & set(identity)
    assert set(identity) == fields - set(NON_RESULT_KEYS) - set(ADDED_KEYS)  # added keys: only when set
    for key in NON_RESULT_KEYS:  # changing a left-out key keeps the hash
        value = {"output_dir": "elsewhere", "progress": False, "checkpoint_every": 7, "save_model": False,
                 "merge_lora": True, "eval_every": 3, "eval_at_samples": [16], "track": ["tensorboard"],
                 "track_group": "a-study", "trust_remote_code": True}[key]
        assert config_hash(run_identity(config.updated(**{key: value}))) == config_hash(identity)
    for key, value in (("epochs", 2.0), ("max_length", 512), ("learning_rate", 1e-4), ("seed", 1),
                       ("dtype", "bfloat16"), ("max_tokens_per_micro_batch", 4096)):
        assert config_hash(run_identity(config.updated(**{key: value}))) != config_hash(identity)


def test_data_enter_by_content_not_by_path(data_file: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere.jsonl"
    moved.write_bytes(data_file.read_bytes())
    a = run_identity(TrainConfig.of(model="m", data=[DataSource(str(data_file))]))
    b = run_identity(TrainConfig.of(model="m", data=[DataSource(str(moved))]))
    assert a == b and a["data"][0]["content"].startswith("sha256:")
    moved.write_text(moved.read_text() + moved.read_text().splitlines()[0] + "\n")  # same name, other contents
    c = run_identity(TrainConfig.of(model="m", data=[DataSource(str(moved))]))
    assert [k for k, _, _ in identity_diff(a, c)] == ["data[0].content"]
    with pytest.raises(FileNotFoundError, match="data file not found"):
        run_identity(TrainConfig.of(model="m", data=[DataSource(str(tmp_path / "missing.jsonl"))]))


def test_digests_are_cached_by_path_size_and_mtime(data_file: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(digest, "_MEMO", {})
    calls = []
    real = digest._hash_path
    monkeypatch.setattr(digest, "_hash_path", lambda p: calls.append(p) or real(p))
    first = digest.file_digest(data_file)
    assert digest.file_digest(data_file) == first and len(calls) == 1
    monkeypatch.setattr(digest, "_MEMO", {})  # a new process: the on-disk cache answers
    assert digest.file_digest(data_file) == first and len(calls) == 1
    data_file.write_text(data_file.read_text() + '{"prompt": "1+1=", "completion": "2"}\n')
    assert digest.file_digest(data_file) != first and len(calls) == 2


def test_the_digest_cache_keeps_the_files_hashed_last(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(digest, "_MEMO", {})
    monkeypatch.setattr(digest, "MAX_ENTRIES", 3)
    files = [tmp_path / f"{i}.jsonl" for i in range(5)]
    for i, file in enumerate(files):
        file.write_text(f'{{"prompt": "{i}", "completion": "x"}}\n')
    first = [digest.file_digest(file) for file in files]
    kept = json.loads((tmp_path / "cache" / "tunescout" / "digests.json").read_text())
    assert list(kept) == [str(file.resolve()) for file in files[2:]]
    monkeypatch.setattr(digest, "_MEMO", {})
    assert digest.file_digest(files[0]) == first[0]  # evicted: hashed again, the same digest
    kept = json.loads((tmp_path / "cache" / "tunescout" / "digests.json").read_text())
    assert list(kept) == [str(file.resolve()) for file in (files[3], files[4], files[0])]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(next((run / "model").glob("*.safetensors")))


def test_evaluation_points_do_not_change_the_weights(tiny_model_dir: Path, data_file: Path, tmp_path: Path) -> None:
    """Why eval_every and eval_at_samples may be left out of the identity: evaluating draws no
    random numbers and leaves the model as it was, so the trained weights are the same bits."""
    held_out = write_jsonl(make_rows("arithmetic", 8, seed=1), tmp_path / "eval.jsonl")
    plain = _config(tiny_model_dir, data_file, tmp_path / "plain", checkpoint_every=None,
                    eval_data=[DataSource(str(held_out))], method="lora", lora=LoraConfig(dropout=0.1))
    evals = plain.updated(output_dir=str(tmp_path / "evals"), eval_every=1, eval_at_samples=[8])
    assert run_identity(plain) == run_identity(evals)
    from tunescout.data.formats import read_examples
    from tunescout.evaluate import evaluate_task

    examples = read_examples(held_out)

    def generate(model, tokenizer) -> dict:  # what a study trial runs at its evaluation points
        return {"exact_match": evaluate_task(model, tokenizer, examples, "exact_match", max_new_tokens=4,
                                             device="cpu")["score"]}

    train(plain)
    assert train(evals, task_eval=generate).status == "completed"
    assert len((tmp_path / "evals" / "eval.jsonl").read_text().splitlines()) > \
        len((tmp_path / "plain" / "eval.jsonl").read_text().splitlines())
    a, b = _weights(tmp_path / "plain"), _weights(tmp_path / "evals")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def _listing(run: Path) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in sorted(run.rglob("*")) if p.name != ".lock"}


def test_resume_with_a_changed_config_is_refused_and_nothing_is_touched(tiny_model_dir, data_file, tmp_path) -> None:
    run = tmp_path / "run"
    train(_config(tiny_model_dir, data_file, run, schedule="constant"))
    before = _listing(run)
    changed = _config(tiny_model_dir, data_file, run, schedule="cosine", learning_rate=3e-3, max_steps=6)
    with pytest.raises(ResumeMismatch) as err:
        train(changed, resume=True)
    message = str(err.value)
    for key, old, new in (("schedule", "'constant'", "'cosine'"), ("learning_rate", "0.001", "0.003"),
                          ("max_steps", "3", "6")):
        assert f"{key}: {old} in the run, {new} now" in message
    assert "--restart" in message and _listing(run) == before
    # a non-result setting may differ: the run continues
    assert train(_config(tiny_model_dir, data_file, run, progress=True, checkpoint_every=2), resume=True).status \
        == "completed"


def test_an_existing_run_is_never_overwritten_without_restart(tiny_model_dir, data_file, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    train(_config(tiny_model_dir, data_file, run))
    before = _listing(run)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(_config(tiny_model_dir, data_file, run, learning_rate=1e-2))
    assert _listing(run) == before
    result = train(_config(tiny_model_dir, data_file, run, learning_rate=1e-2, max_steps=2), restart=True)
    assert result.status == "completed" and result.steps == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step-")) == ["step-0000002"]

    from tunescout.cli import main

    assert main(["train", "--resume-dir", str(run), "lr=0.5"]) == 2
    assert "learning_rate: 0.01 in the run, 0.5 now" in capsys.readouterr().err


def test_a_second_process_cannot_train_in_a_locked_run_dir(tiny_model_dir, data_file, tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with lock_run_dir(run):
        with pytest.raises(RunDirLocked, match=f"process {os.getpid()} is training there"):
            train(_config(tiny_model_dir, data_file, run))
    assert not (run / "checkpoints").exists()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from tunescout.train.rundir import lock_run_dir
            with lock_run_dir({str(run)!r}):
                print("locked", flush=True)
                time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunDirLocked, match=f"process {holder.pid}"):
        train(_config(tiny_model_dir, data_file, run))
    os.kill(holder.pid, signal.SIGKILL)  # a killed holder leaves no stale lock
    holder.wait()
    time.sleep(0.1)
    assert train(_config(tiny_model_dir, data_file, run)).status == "completed"


def test_a_run_dir_without_a_record_is_judged_by_its_config_yaml(tiny_model_dir, data_file, tmp_path) -> None:
    run = tmp_path / "run"
    train(_config(tiny_model_dir, data_file, run))
    (run / "run.json").unlink()  # as written before run.json existed
    with pytest.raises(ResumeMismatch, match="learning_rate: 0.001 in the run, 0.01 now"):
        train(_config(tiny_model_dir, data_file, run, learning_rate=1e-2), resume=True)
    (run / "config.yaml").write_text("learning_rat: 3\n")
    with pytest.raises(ConfigError, match="cannot tell which run this directory holds"):
        train(_config(tiny_model_dir, data_file, run), resume=True)


def test_what_auto_resolved_to_must_match_on_resume(tiny_model_dir, data_file, tmp_path) -> None:
    import json

    run = tmp_path / "run"
    train(_config(tiny_model_dir, data_file, run))
    record = json.loads((run / "run.json").read_text())
    assert record["resolved"]["dtype"] == "float32" and record["resolved"]["device"] == "cpu"
    record["resolved"]["dtype"] = "bfloat16"  # as if checkpointed on a GPU
    (run / "run.json").write_text(json.dumps(record))
    with pytest.raises(ResumeMismatch, match="resolved.dtype: 'bfloat16' in the run, 'float32' now"):
        train(_config(tiny_model_dir, data_file, run), resume=True)


def test_the_storage_token_is_per_study_and_a_folder_not_shared_is_named(tmp_path: Path) -> None:
    from tunescout.train.rundir import StorageNotShared, check_storage, mark_storage

    a = mark_storage(tmp_path / "runs", "study-a")
    b = mark_storage(tmp_path / "runs", "study-b")  # another study's driver on the same folder
    check_storage(*a)
    check_storage(*b)
    a_again = mark_storage(tmp_path / "runs", "study-a")  # the same study's next sweep: a new token
    with pytest.raises(StorageNotShared, match="another driver token"):
        check_storage(*a)
    check_storage(*a_again)
    with pytest.raises(StorageNotShared, match=r"does not see the study's runs folder .*no \.tunescout-storage-"):
        check_storage(tmp_path / "elsewhere" / Path(a[0]).name, a[1])


def test_a_run_length_limit_carries_its_meaning_into_the_identity(data_file: Path) -> None:
    """max_steps/max_samples became totals that cycle the data: their runs are new trials."""
    plain = run_identity(TrainConfig.of(model="m", data=[DataSource(str(data_file))]))
    assert "run_length" not in plain
    for limit in ({"max_steps": 8}, {"max_samples": 64}):
        identity = run_identity(TrainConfig.of(model="m", data=[DataSource(str(data_file))], **limit))
        assert identity["run_length"] == "total-cycling"
