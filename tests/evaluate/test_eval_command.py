"""``tunescout eval`` end to end on the tiny model: a model folder, a LoRA run directory (adapter
on its base), harness tasks beside the task metric, per-row predictions, and the errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunescout.cli import main
from tunescout.config import DataSource, TrainConfig
from tunescout.demo.tasks import write_jsonl
from tunescout.train import train

ROWS = [{"prompt": f"Say {w}", "completion": w} for w in "alpha beta gamma delta apple river stone cloud".split()]


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evalrun")
    train_file = write_jsonl(ROWS, root / "train.jsonl")
    eval_file = write_jsonl(ROWS[:5], root / "eval.jsonl")
    config = TrainConfig.of(model=str(tiny_model_dir), method="lora", data=[DataSource(str(train_file))],
                         eval_data=[DataSource(str(eval_file))], batch_size=4, max_steps=3, learning_rate=1e-2,
                         max_length=64, max_tokens_per_micro_batch=256, output_dir=str(root / "run"), progress=False)
    assert train(config).status == "completed"
    return root / "run"


def _eval(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["eval", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_run_directory_scores_its_adapter_with_the_loss_training_measured(lora_run: Path, tmp_path: Path,
                                                                           capsys) -> None:
    data = lora_run.parent / "eval.jsonl"
    out_json, preds = tmp_path / "results.json", tmp_path / "preds.jsonl"
    code, out, _ = _eval([str(lora_run), "--data", str(data), "--metric", "f1", "--max-new-tokens", "4",
                          "--batch-size", "2", "-o", str(out_json), "--predictions", str(preds)], capsys)
    assert code == 0
    doc = json.loads(out_json.read_text())
    assert doc["model"] == str(lora_run) and doc["n"] == 5
    assert set(doc["metrics"]) == {"f1", "val_loss"}
    assert doc["loaded"]["kind"] == "adapter" and doc["loaded"]["path"] == str(lora_run / "model")
    # the adapter on its base: the same validation loss the training loop measured at the end
    trained = json.loads((lora_run / "result.json").read_text())["eval_loss"]
    assert doc["metrics"]["val_loss"] == pytest.approx(trained, rel=1e-5)
    assert doc["config"]["metric"] == "f1" and doc["config"]["max_new_tokens"] == 4
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["where"] for r in rows] == [f"{data}:{i}" for i in range(1, 6)]
    assert sum(r["score"] for r in rows) / 5 == pytest.approx(doc["metrics"]["f1"])
    assert "val_loss" in out and "f1" in out  # the table


@pytest.mark.parametrize("dtype", ["auto", "bfloat16"])
def test_a_run_directory_is_scored_with_its_own_data_settings_and_numerics(tiny_model_dir: Path, tmp_path: Path,
                                                                          dtype: str, capsys) -> None:
    # Loss on every token and rows cut to 8 tokens: not eval's defaults (completion, 2048); and in
    # bfloat16, float32 master weights under bfloat16 autocast, as training computed it.
    rows = [{"prompt": f"Please repeat after me the word {w}", "completion": f"{w}, {w} and {w} again"} for w in
            "alpha beta gamma delta".split()]
    train_file, eval_file = write_jsonl(rows, tmp_path / "train.jsonl"), write_jsonl(rows, tmp_path / "eval.jsonl")
    config = TrainConfig.of(model=str(tiny_model_dir), method="full", data=[DataSource(str(train_file))],
                         eval_data=[DataSource(str(eval_file))], batch_size=4, max_steps=2, learning_rate=1e-3,
                         max_length=8, train_on="all", max_tokens_per_micro_batch=256, output_dir=str(tmp_path / "run"),
                         progress=False, dtype=dtype)
    assert train(config).status == "completed"
    out_json = tmp_path / "r.json"
    assert _eval([str(tmp_path / "run"), "--data", str(eval_file), "-o", str(out_json)], capsys)[0] == 0
    doc = json.loads(out_json.read_text())
    trained = json.loads((tmp_path / "run" / "result.json").read_text())["eval_loss"]
    assert doc["metrics"]["val_loss"] == pytest.approx(trained, rel=1e-5)
    assert doc["loaded"].get("autocast") == (None if dtype == "auto" else dtype)
    assert doc["config"]["max_length"] == 8 and doc["tokenized"] == {"max_length": 8, "train_on": "all",
                                                                    "too_long": "truncate", "chat_template": None}
    # a setting given on the command line still wins
    assert _eval([str(tmp_path / "run"), "--data", str(eval_file), "--max-length", "64", "-o", str(out_json)],
                 capsys)[0] == 0
    assert json.loads(out_json.read_text())["config"]["max_length"] == 64


def test_a_model_folder_with_harness_tasks_and_a_limit(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("lm_eval")
    from harness_tasks import write_mc_task

    data = write_jsonl(ROWS, tmp_path / "eval.jsonl")
    tasks = write_mc_task(tmp_path / "tasks")
    out_json = tmp_path / "r.json"
    code, out, _ = _eval([str(tiny_model_dir), "--data", str(data), "--metric", "exact_match", "--limit", "3",
                          "--max-new-tokens", "2", "--tasks", "tiny_mc", "--include-path", str(tasks),
                          "-o", str(out_json)], capsys)
    assert code == 0
    doc = json.loads(out_json.read_text())
    assert doc["n"] == 3 and set(doc["metrics"]) == {"exact_match", "val_loss"}
    assert doc["harness_n"] == {"tiny_mc": 3}
    assert 0.0 <= doc["harness"]["tiny_mc"]["acc"] <= 1.0
    assert "tiny_mc acc" in out


def test_generation_settings_are_checked(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    data = write_jsonl(ROWS[:2], tmp_path / "eval.jsonl")
    code, _, err = _eval([str(tiny_model_dir), "--data", str(data), "--metric", "f1", "--gen", "temprature=0.5"],
                         capsys)
    assert code == 2 and "unknown generation setting `temprature` (did you mean `temperature`?)" in err
    code, _, _ = _eval([str(tiny_model_dir), "--data", str(data), "--metric", "f1", "--max-new-tokens", "2",
                        "--gen", "do_sample=true", "--gen", "top_k=5"], capsys)
    assert code == 0


@pytest.mark.parametrize(("rows", "args", "match"), [
    (ROWS, ["--metric", "acuracy"], "unknown metric 'acuracy'; did you mean 'accuracy'?"),
    (ROWS, ["--metric", "val_loss"], "not scored from generated text"),
    ([ROWS[0], {"text": "no answer here"}], ["--metric", "f1"], r"eval.jsonl:2: a `text` row has no prompt and answer"),
    ([ROWS[0], {"messages": [{"role": "user", "content": "hi"}]}], ["--metric", "f1"],
     r"eval.jsonl:2: chat has no assistant turn"),
    ([ROWS[0], {"prompt": "no completion"}], ["--metric", "f1"], r"eval.jsonl:2: has `prompt` but no `completion`"),
])
def test_bad_input_is_a_clear_error(tiny_model_dir: Path, tmp_path: Path, capsys, rows, args, match) -> None:
    data = write_jsonl(rows, tmp_path / "eval.jsonl")
    code, _, err = _eval([str(tiny_model_dir), "--data", str(data), *args], capsys)
    assert code == 2
    assert match in err or __import__("re").search(match, err), err


def test_a_folder_that_is_not_a_model(tmp_path: Path, capsys) -> None:
    data = write_jsonl(ROWS, tmp_path / "eval.jsonl")
    (tmp_path / "empty").mkdir()
    code, _, err = _eval([str(tmp_path / "empty"), "--data", str(data)], capsys)
    assert code == 2 and "is not a model: no config.json" in err
    code, _, err = _eval([str(tmp_path / "missing"), "--data", str(data)], capsys)
    assert code == 2 and "no such model file or folder" in err
    code, _, err = _eval([str(tmp_path / "empty"), "--metric", "f1"], capsys)
    assert code == 2 and "needs --data" in err
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: x\n")
    code, _, err = _eval([str(run), "--data", str(data)], capsys)
    assert code == 2 and "run directory without a saved model" in err
