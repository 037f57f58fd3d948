"""Every command on bad input: a one-paragraph error naming the file, line or key, a non-zero exit,
and never a traceback. Also: nothing half-written is left behind by a run that never trained."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tunescout.cli import main
from tunescout.demo.tasks import make_rows, write_jsonl
from tunescout.study.store import open_store

DATASET = "{{name: d, train: train.jsonl, eval: {eval}, metric: accuracy, max_new_tokens: 4{extra}}}"


def _study(root: Path, model: Path, name: str = "s", dataset_extra: str = "", eval_file: str = "eval.jsonl",
           **fields: str) -> Path:
    write_jsonl(make_rows("sentiment", 16, seed=0), root / "train.jsonl")
    write_jsonl(make_rows("sentiment", 4, seed=1), root / "eval.jsonl")
    doc = {"name": name, "models": f"[{model}]", "methods": "[lora]",
           "datasets": "[" + DATASET.format(eval=eval_file, extra=dataset_extra) + "]",
           "grid": "{learning_rate: [1.0e-3]}",
           "fixed": "{max_steps: 2, batch_size: 4, max_length: 64, max_tokens_per_micro_batch: 256}", **fields}
    path = root / "study.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in doc.items()))
    return path


def _fails(argv: list[str], capfd, expect: str, code: int = 2) -> str:
    rc = main(argv)
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    assert rc == code, (rc, err)
    assert expect in err, err
    return err


@pytest.mark.parametrize(("fields", "expect"), [
    ({"name": '"../../escaped"'}, "`name` must be a string of letters"),
    ({"name": "/tmp/abs"}, "it may not be a path"),
    ({"name": "123"}, "`name` must be a string"),
    ({"grid": "[1, 2]"}, "`grid` must be a mapping, got list"),
    ({"models": "just-a-string"}, "`models` must be a list, got str"),
    ({"methods": "[]"}, "`methods` is empty"),
    ({"dataset_extra": ", eval_limit: -5"}, "datasets[0].eval_limit: expected a positive integer or null, got -5"),
    ({"dataset_extra": ", eval_limit: 2.5"}, "eval_limit: expected a positive integer"),
    ({"dataset_extra": ", max_new_tokens: lots"}, "datasets[0].max_new_tokens: expected a positive integer, got 'lots'"),
    ({"fixed": "{epochs: .inf, max_length: 64}"}, "epochs: must be a finite number"),
    ({"grid": "{learning_rate: [.nan]}"}, "learning_rate: must be a finite number"),
    ({"budget": "{tokens: .inf}"}, "budget.tokens: expected a positive number"),
    ({"stopping": "{rule: asha, rungs: [2.0]}"}, "rungs"),
])
def test_a_bad_study_is_refused_at_load_naming_the_key(tiny_model_dir, tmp_path, capfd, fields, expect) -> None:
    extra = fields.pop("dataset_extra", "")
    path = _study(tmp_path, tiny_model_dir, dataset_extra=extra, **fields)
    for argv in (["sweep", str(path), "--dry-run"], ["sweep", str(path)]):
        _fails(argv, capfd, expect)
    assert not (tmp_path.parent / "escaped.db").exists() and not list(tmp_path.glob("*.db"))


@pytest.mark.parametrize(("flag", "value"), [("--max-new-tokens", "0"), ("--eval-limit", "-1")])
def test_tune_refuses_bad_evaluation_sizes_before_any_trial(tiny_model_dir, tmp_path, capfd, flag, value) -> None:
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    _fails(["tune", "--model", str(tiny_model_dir), "--train", str(tmp_path / "d.jsonl"), "--eval",
            str(tmp_path / "d.jsonl"), "--preset", "cbs-llama3-8b-lora", "--out", str(tmp_path / "out"), flag, value],
           capfd, f"{flag[2:].replace('-', '_')}: expected a positive integer")
    assert not (tmp_path / "out" / "tune.db").exists()


def test_a_malformed_eval_file_fails_the_dry_run_before_any_trial(tiny_model_dir, tmp_path, capfd) -> None:
    (tmp_path / "bad_eval.jsonl").write_text('{"prompt": "a", "completion": "b"}\n{"text": "no answer"}\n')
    path = _study(tmp_path, tiny_model_dir, eval_file="bad_eval.jsonl")
    _fails(["sweep", str(path), "--dry-run"], capfd, "bad_eval.jsonl:2: a `text` row has no prompt and answer")


@pytest.fixture()
def store_file(tmp_path: Path) -> Path:
    """A real study store, with enough rows to span several pages, then one page overwritten."""
    path = tmp_path / "s.db"
    with open_store(path) as store:
        store.sync_trials("s", {"name": "s"}, [{"trial_id": f"t{i}", "model": "m", "method": "lora", "dataset": "d",
                                                 "hparams": {"learning_rate": i}, "seed": 0, "config": {"x": "y" * 500},
                                                 "run_dir": "", "planned_samples": 8, "planned_tokens": 80}
                                                for i in range(40)])
    with sqlite3.connect(path) as db:
        page = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'trials'").fetchone()[0]
    data = bytearray(path.read_bytes())
    data[(root - 1) * page: root * page] = b"\xa5" * page  # the trials table's root page
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("argv", [["status", "{db}"], ["status", "{db}", "--json"], ["rank", "{db}"],
                                  ["analyze", "{db}"], ["report", "{db}", "-o", "{out}/r.html"],
                                  ["export", "{db}", "-o", "{out}/tables"], ["recommend", "--from", "{db}"]])
def test_a_damaged_store_is_an_error_naming_it(store_file, tmp_path, capfd, argv) -> None:
    argv = [a.format(db=store_file, out=tmp_path) for a in argv]
    with pytest.raises(sqlite3.DatabaseError):  # the page really is damaged
        with sqlite3.connect(store_file) as db:
            db.execute("SELECT * FROM trials").fetchall()
    err = _fails(argv, capfd, "", code=2)
    assert "cannot be read" in err or "not a tunescout study store" in err, err


def test_an_unreadable_store_file_is_refused_by_every_reading_command(tmp_path, capfd) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"0123456789" * 100)
    for argv in (["status", str(junk)], ["rank", str(junk)], ["analyze", str(junk)], ["export", str(junk), "-o",
                                                                                      str(tmp_path / "t")]):
        _fails(argv, capfd, "not a tunescout study store")


def test_malformed_rules_and_stopping_options_are_refused(tmp_path, capfd, tiny_model_dir) -> None:
    (tmp_path / "rules.yaml").write_text("- {rule: asha, rungs: [0.25]\n")
    _fails(["analyze", str(tmp_path / "x.db"), "--rules", str(tmp_path / "rules.yaml")], capfd, "")
    path = _study(tmp_path, tiny_model_dir)
    with open_store(tmp_path / "ok.db"):
        pass
    _fails(["analyze", str(tmp_path / "ok.db"), "--rules", str(tmp_path / "rules.yaml")], capfd,
           "--rules")
    (tmp_path / "rules.yaml").write_text("{rule: asha}\n")
    _fails(["analyze", str(tmp_path / "ok.db"), "--rules", str(tmp_path / "rules.yaml")], capfd,
           "expected a YAML list of mappings")
    (tmp_path / "rules.yaml").write_text("- {rule: ashaa}\n")
    _fails(["analyze", str(tmp_path / "ok.db"), "--rules", str(tmp_path / "rules.yaml")], capfd, "--rules")
    common = ["tune", "--model", str(tiny_model_dir), "--train", str(tmp_path / "train.jsonl"), "--eval",
              str(tmp_path / "eval.jsonl"), "--out", str(tmp_path / "tune")]
    _fails([*common, "--stopping", "{rule: asha, rungs: [0.25]"], capfd, "--stopping: not valid YAML")
    _fails([*common, "--stopping", "[asha]"], capfd, "--stopping: expected a YAML mapping")
    assert path.exists() and not (tmp_path / "tune").exists()


def test_global_flags_after_the_command(tmp_path, capfd) -> None:
    with open_store(tmp_path / "ok.db"):
        pass
    assert main(["status", str(tmp_path / "ok.db"), "-v"]) in (0, 2)
    assert "unrecognized arguments" not in capfd.readouterr().err


def test_a_run_whose_data_fails_is_recorded_and_a_plain_train_may_start_over(tiny_model_dir, tmp_path, capfd) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "no completion"}\n')
    run = tmp_path / "run.yaml"
    run.write_text(f"model: {tiny_model_dir}\ndata: [bad.jsonl]\nbatch_size: 4\nmax_steps: 1\nmax_length: 64\n"
                   f"max_tokens_per_micro_batch: 256\nprogress: false\noutput_dir: {tmp_path / 'out'}\n")
    _fails(["train", str(run)], capfd, "bad.jsonl:1")
    failed = json.loads((tmp_path / "out" / "result.json").read_text())  # why it failed is kept
    assert failed["status"] == "failed" and "bad.jsonl:1" in failed["reason"] and failed["steps"] == 0
    write_jsonl(make_rows("sentiment", 8, seed=0), bad)
    assert main(["train", str(run)]) == 0  # nothing trained there: no --restart needed
    assert main(["train", str(run)]) == 2  # but a run that trained is never overwritten silently
    assert "already holds a run" in capfd.readouterr().err
    assert json.loads((tmp_path / "out" / "result.json").read_text())["status"] == "completed"


def test_eval_refuses_an_output_it_cannot_write_before_evaluating(tiny_model_dir, tmp_path, capfd,
                                                                  monkeypatch) -> None:
    import tunescout.evaluate.run as run

    def never(*args, **kwargs):
        raise AssertionError("evaluated before checking where the output goes")

    monkeypatch.setattr(run, "evaluate_model", never)
    write_jsonl(make_rows("sentiment", 4, seed=1), tmp_path / "eval.jsonl")
    common = ["eval", str(tiny_model_dir), "--data", str(tmp_path / "eval.jsonl"), "--metric", "accuracy"]
    _fails([*common, "--predictions", str(tmp_path)], capfd, "--predictions")
    _fails([*common, "--predictions", str(tmp_path / "no" / "such" / "p.jsonl")], capfd, "does not exist")
    _fails([*common, "-o", str(tmp_path)], capfd, "is a folder")


def test_demo_refuses_an_output_that_is_a_file_before_any_work(tmp_path, capfd, monkeypatch) -> None:
    import tunescout.workflows.demo as demo

    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    (tmp_path / "file").write_text("x")
    _fails(["demo", "--out", str(tmp_path / "file")], capfd, "is a file")
