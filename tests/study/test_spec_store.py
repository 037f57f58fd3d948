"""Study spec expansion: trial ids from the whole result-relevant config, trial configs, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunescout.config import ConfigError
from tunescout.study.spec import expand_trials, load_study, trial_config


def _study(tmp_path: Path, grid: str, extra: str = "") -> Path:
    for name in ("a_train.jsonl", "a_eval.jsonl"):
        (tmp_path / name).write_text('{"prompt": "1+1=", "completion": "2"}\n')
    path = tmp_path / "study.yaml"
    path.write_text(
        "name: demo\nmodels: [m1]\nmethods: [full, lora]\n"
        "datasets:\n  - {name: a, train: a_train.jsonl, eval: a_eval.jsonl, metric: exact_match}\n"
        f"grid:\n{grid}\nfixed: {{epochs: 1, max_length: 64, max_tokens_per_micro_batch: 256}}\n{extra}"
    )
    return path


GRID = "  learning_rate: [1.0e-5, 1.0e-4]\n  batch_size: [8, 32]\n  lora.r: [8, 16]\n"


def test_expansion_ids_are_stable_and_lora_keys_skip_full(tmp_path: Path) -> None:
    spec = load_study(_study(tmp_path, GRID))
    trials = expand_trials(spec)
    full = [t for t in trials if t.method == "full"]
    lora = [t for t in trials if t.method == "lora"]
    assert len(full) == 4 and len(lora) == 8  # lora.r does not multiply full fine-tuning trials
    assert all("lora.r" not in t.hparams for t in full)
    assert [t.trial_id for t in expand_trials(load_study(tmp_path / "study.yaml"))] == [t.trial_id for t in trials]
    assert len({t.trial_id for t in trials}) == 12


def test_adding_a_grid_value_keeps_existing_ids(tmp_path: Path) -> None:
    before = {t.trial_id for t in expand_trials(load_study(_study(tmp_path, GRID)))}
    bigger = GRID.replace("[1.0e-5, 1.0e-4]", "[1.0e-5, 1.0e-4, 1.0e-3]")
    after = {t.trial_id for t in expand_trials(load_study(_study(tmp_path, bigger)))}
    assert before < after and len(after) == 18


def test_trial_config_applies_fixed_grid_and_identity(tmp_path: Path) -> None:
    spec = load_study(_study(tmp_path, GRID))
    trial = next(t for t in expand_trials(spec) if t.method == "lora" and t.hparams["lora.r"] == 16)
    config = trial_config(spec, trial)
    assert config.lora.r == 16 and config.method == "lora" and config.batch.epochs == 1
    assert config.data[0].path == str(tmp_path / "a_train.jsonl")
    assert config.evaluation.eval_data[0].path == str(tmp_path / "a_eval.jsonl")
    assert config.output.output_dir.endswith(trial.trial_id)
    assert spec.store == str(tmp_path / "demo.db")


@pytest.mark.parametrize(
    ("grid", "extra", "message"),
    [
        ("  learning_rat: [1.0e-5]\n", "", r"unknown key `learning_rat` \(did you mean `learning_rate`\?\)"),
        ("  batch_size: 8\n", "", r"grid.batch_size: expected a non-empty list"),
        (GRID, "seedz: [1]\n", r"unknown key `seedz` \(did you mean `seeds`\?\)"),
    ],
)
def test_study_errors(tmp_path: Path, grid: str, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_study(_study(tmp_path, grid, extra))


def test_study_file_errors_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_study(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_study(path)
    path.write_text("name: s\nmodels: [m]\ndatasets: [a_train.jsonl]\n")
    with pytest.raises(ConfigError, match=r"datasets\[0\] must be a mapping"):
        load_study(path)


def test_grid_keys_inside_a_fixed_mapping_leave_the_spec_alone(tmp_path: Path) -> None:
    path = _study(tmp_path, "  lora.alpha: [16, 64]\n")
    path.write_text(path.read_text().replace("fixed: {", "fixed: {lora: {r: 4}, "))
    spec = load_study(path)
    configs = [trial_config(spec, t) for t in expand_trials(spec) if t.method == "lora"]
    assert sorted((c.lora.r, c.lora.alpha) for c in configs) == [(4, 16.0), (4, 64.0)]
    assert spec.fixed["lora"] == {"r": 4}  # what the store saves and the report shows as fixed


def test_shipped_example_study_plans(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # builtin:tiny-llama is built here
    from tunescout.study.sweep import format_plan, plan_study

    spec = load_study(Path(__file__).resolve().parents[2] / "examples" / "study" / "study.yaml")
    rows = plan_study(spec)
    assert len(rows) == 24 and spec.stopping["rule"] == "dynamics"
    assert all(r["planned_samples"] == 2 * 64 and r["planned_tokens"] > 0 for r in rows)
    assert format_plan(rows).splitlines()[-1].startswith("24 trials")


def _ids(path: Path) -> set[str]:
    return {t.trial_id for t in expand_trials(load_study(path))}


@pytest.mark.parametrize(("old", "new"), [
    ("epochs: 1", "epochs: 2"),
    ("max_length: 64", "max_length: 96"),
    ("metric: exact_match", "metric: f1"),
    ("name: demo", "name: other-study"),
    ("fixed: {", "fixed: {schedule: cosine, "),
])
def test_a_result_relevant_change_gives_new_ids(tmp_path: Path, old: str, new: str) -> None:
    path = _study(tmp_path, GRID)
    before = _ids(path)
    path.write_text(path.read_text().replace(old, new))
    assert not before & _ids(path)


def test_new_data_contents_give_new_ids_and_a_moved_study_keeps_them(tmp_path: Path) -> None:
    (tmp_path / "here").mkdir()
    path = _study(tmp_path / "here", GRID)
    before = _ids(path)
    moved = tmp_path / "there"
    moved.mkdir()
    for f in (tmp_path / "here").iterdir():
        (moved / f.name).write_bytes(f.read_bytes())
    assert _ids(moved / "study.yaml") == before
    (moved / "a_eval.jsonl").write_text('{"prompt": "2+2=", "completion": "4"}\n')
    assert not before & _ids(moved / "study.yaml")


def test_settings_that_cannot_change_a_result_keep_the_ids(tmp_path: Path) -> None:
    path = _study(tmp_path, GRID)
    before = _ids(path)
    path.write_text(path.read_text().replace("fixed: {", "fixed: {checkpoint_every: 5, save_model: false, "))
    assert _ids(path) == before


@pytest.mark.parametrize(("extra", "message"), [
    ("budget: {token: 10}\n", r"budget: unknown key `token` \(did you mean `tokens`\?\)"),
    ("budget: {wall_s: -1}\n", r"budget.wall_s: expected a positive number"),
    ("budget: [1]\n", r"budget: expected a mapping"),
    ("seeds: 3\n", r"seeds: expected a non-empty list of integers"),
    ("seeds: [0, 1.5]\n", r"seeds: expected a non-empty list of integers"),
    ("stopping: {rule: dynamic}\n", r"dynamic"),
    ("stopping: {rule: asha, eta: 1}\n", r"eta"),
])
def test_study_settings_are_checked_at_load(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_study(_study(tmp_path, GRID, extra))


def test_dry_run_refuses_a_bad_stopping_rule(tmp_path: Path, capsys) -> None:
    from tunescout.cli import main

    assert main(["sweep", str(_study(tmp_path, GRID, "stopping: {rule: nope}\n")), "--dry-run"]) == 2
    assert "nope" in capsys.readouterr().err


def _phased_study(tmp_path: Path, train: str) -> Path:
    for name in ("k.jsonl", "s.jsonl", "a_eval.jsonl"):
        (tmp_path / name).write_text('{"prompt": "1+1=", "completion": "2"}\n')
    path = tmp_path / "study.yaml"
    path.write_text(
        "name: phases\nmodels: [m1]\nmethods: [full]\n"
        f"datasets:\n  - {{name: two, train: {train}, eval: a_eval.jsonl, metric: exact_match}}\n"
        "grid:\n  strategy: [stacked, phased]\nfixed: {epochs: 1, max_length: 64, max_tokens_per_micro_batch: 256}\n"
    )
    return path


def test_a_dataset_of_two_phases_gives_stacked_and_phased_trials(tmp_path: Path) -> None:
    """Two tasks as the phases of one dataset: the recipe's stacked against phased comparison."""
    spec = load_study(_phased_study(tmp_path, "[{path: k.jsonl, phase: 1}, {path: s.jsonl, phase: 2, epochs: 2}]"))
    configs = {t.hparams["strategy"]: trial_config(spec, t) for t in expand_trials(spec)}
    assert set(configs) == {"stacked", "phased"}
    for config in configs.values():
        assert [(d.path, d.phase, d.epochs) for d in config.data] == [
            (str(tmp_path / "k.jsonl"), 1, None), (str(tmp_path / "s.jsonl"), 2, 2.0)]
    assert configs["phased"].processing.strategy == "phased"


@pytest.mark.parametrize(("train", "message"), [
    ("[]", r"datasets\[0\]\.train: expected a path or a list"),
    ("[{phase: 1}]", r"datasets\[0\]\.train\[0\]: expected a mapping with a `path`"),
    ("[{path: k.jsonl, phse: 1}]", r"datasets\[0\]\.train\[0\]: unknown key `phse` \(did you mean `phase`\?\)"),
])
def test_a_bad_list_of_train_files_is_refused_at_load(tmp_path: Path, train: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_study(_phased_study(tmp_path, train))
