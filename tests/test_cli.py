"""The CLI is a thin shell: it builds the config, runs, prints a summary, maps status to exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunescout.cli import main
from tunescout.demo.tasks import make_rows, write_jsonl


@pytest.fixture()
def run_yaml(tiny_model_dir: Path, tmp_path: Path) -> Path:
    write_jsonl(make_rows("arithmetic", 24), tmp_path / "train.jsonl")
    path = tmp_path / "run.yaml"
    path.write_text(f"model: {tiny_model_dir}\ndata: [train.jsonl]\nbatch_size: 8\nmax_length: 64\n"
                    f"max_tokens_per_micro_batch: 256\nprogress: false\noutput_dir: {tmp_path / 'out'}\n")
    return path


def test_train_with_overrides(run_yaml: Path, tmp_path: Path, capsys) -> None:
    assert main(["train", str(run_yaml), "lr=5e-4", "max_steps=2", "method=lora", "lora.r=4"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "completed" and summary["steps"] == 2
    saved = (tmp_path / "out" / "config.yaml").read_text()
    assert "learning_rate: 0.0005" in saved and "r: 4" in saved
    assert json.loads((tmp_path / "out" / "model" / "adapter_config.json").read_text())["r"] == 4


def test_config_error_exit_code_and_message(run_yaml: Path, capsys) -> None:
    assert main(["train", str(run_yaml), "batch_sise=8"]) == 2
    assert "unknown key `batch_sise` (did you mean `batch_size`?)" in capsys.readouterr().err


def test_malformed_data_names_file_and_line(run_yaml: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "fine"}\n{"prompt": "no completion"}\n')
    assert main(["train", str(run_yaml), f"data={bad}"]) == 2
    assert f"{bad}:3: has `prompt` but no `completion`" in capsys.readouterr().err


def test_diverged_run_exit_code(run_yaml: Path) -> None:
    assert main(["train", str(run_yaml), "lr=1e12", "grad_clip=null", "epochs=3"]) == 3


def test_rank_a_results_table_json(tmp_path: Path, capsys) -> None:
    rows = ["config_id,dataset,score"]
    scores = {"a": [0.90, 0.50, 0.91], "b": [0.60, 0.95, 0.60], "c": [0.85, 0.85, 0.85]}
    for config, values in scores.items():
        rows += [f"{config},d{i},{v}" for i, v in enumerate(values)]
    (tmp_path / "results.csv").write_text("\n".join(rows) + "\n")
    assert main(["rank", str(tmp_path / "results.csv"), "--tau", "0.95", "--json"]) == 0
    ranking = json.loads(capsys.readouterr().out)["ranking"]
    # a covers d0 and d2 (>= 0.95 of the best), b covers d1; c covers nothing on its own
    assert [r["config_id"] for r in ranking] == ["a", "b", "c"]
    assert ranking[0]["newly_covered"] == ["d0", "d2"] and ranking[1]["newly_covered"] == ["d1"]
    assert ranking[1]["cumulative_coverage"] == 1.0
    assert set(ranking[0]) == {"config_id", "newly_covered", "cumulative_coverage", "mean_best_relative"}


def test_rank_table_errors_name_the_column(tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.csv").write_text("config_id,dataset,scores\na,d0,0.5\n")
    assert main(["rank", str(tmp_path / "bad.csv")]) == 2
    assert "score" in capsys.readouterr().err


def test_recommend_presets(capsys) -> None:
    assert main(["recommend", "--model-family", "mistral", "--method", "lora"]) == 0
    out = capsys.readouterr().out
    assert "cbs-mistral-7b-lora" in out and "secondary reproduction" in out and "batch_size: 32" in out
    assert main(["recommend", "--model-family", "gpt2"]) == 2


def test_recommend_from_a_results_table(tmp_path: Path, capsys) -> None:
    (tmp_path / "r.csv").write_text("config_id,dataset,score,hp.learning_rate\n"
                                    "a,d0,0.9,1e-5\na,d1,0.5,1e-5\nb,d0,0.6,1e-4\nb,d1,0.95,1e-4\n")
    assert main(["recommend", "--from", str(tmp_path / "r.csv"), "--top", "2"]) == 0
    out = capsys.readouterr().out.split("# rank")[1:]
    assert "learning_rate: 0.0001" in out[0] and "cover 50%" in out[0]
    assert "learning_rate: 1.0e-05" in out[1] and "cover 100%" in out[1]


def test_status_and_analyze_of_a_store_without_a_study(tmp_path: Path, capsys) -> None:
    from tunescout.study.store import open_store

    open_store(tmp_path / "empty.db").close()
    assert main(["status", str(tmp_path / "empty.db"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trials"] == []
    assert main(["analyze", str(tmp_path / "empty.db")]) == 2
    assert "holds no study" in capsys.readouterr().err


def test_tune_help_names_the_defaults_the_code_uses(capsys) -> None:
    import yaml

    from tunescout.workflows.tune import DEFAULT_BUDGET, DEFAULT_K, DEFAULT_STOPPING

    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    default = text.split("stopping rule as YAML (default ", 1)[1].split(")", 1)[0]
    assert yaml.safe_load(default) == DEFAULT_STOPPING
    assert f"or the presets (default {DEFAULT_K};" in text
    assert f"neither --k nor --stopping, {DEFAULT_BUDGET:g}" in text


def test_overrides_may_follow_the_flags(run_yaml: Path, capsys) -> None:
    assert main(["train", str(run_yaml), "max_steps=1"]) == 0
    capsys.readouterr()
    assert main(["train", str(run_yaml), "--restart", "max_steps=2", "lr=5e-4"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 2
    with pytest.raises(SystemExit):
        main(["train", str(run_yaml), "--restart", "--nope"])
