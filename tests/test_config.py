"""Config loading: YAML + overrides, type checks, unknown keys named with a suggestion."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunescout.config import ConfigError, TrainConfig, build_config, load_config
from tunescout.settings import nest_dotted, parse_overrides


def test_yaml_with_overrides(tmp_path: Path) -> None:
    (tmp_path / "k.jsonl").write_text('{"text": "x"}\n')
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(
        "model: some/model\nmethod: lora\nlora: {r: 16, alpha: 32}\n"
        "data:\n  - {path: k.jsonl, phase: 1}\n  - {path: s.jsonl, phase: 2}\n"
        "strategy: phased\nbatch_size: 3840\nlearning_rate: 2.0e-5\nbetas: [0.9, 0.95]\n"
    )
    cfg = load_config(cfg_file, ["lr=1e-5", "batch_size=64", "lora.r=8", "schedule=cosine"])
    assert cfg.optim.learning_rate == 1e-5 and isinstance(cfg.optim.learning_rate, float)
    assert cfg.batch.batch_size == 64
    assert cfg.lora.r == 8 and cfg.lora.alpha == 32
    assert cfg.optim.schedule == "cosine"
    assert cfg.optim.betas == (0.9, 0.95)
    assert [d.phase for d in cfg.data] == [1, 2]
    # relative data paths resolve against the YAML's folder when the file exists there
    assert cfg.data[0].path == str(tmp_path / "k.jsonl")
    assert cfg.data[1].path == "s.jsonl"


def test_yaml_scientific_notation_without_dot_is_a_float() -> None:
    assert build_config({"learning_rate": "1e-5"}).optim.learning_rate == 1e-5


@pytest.mark.parametrize(
    ("raw", "overrides", "message"),
    [
        ({"learning_rat": 1e-5}, [], r"unknown key `learning_rat` \(did you mean `learning_rate`\?\)"),
        ({}, ["lora.rank=8"], r"unknown key `lora.rank` \(did you mean `lora.r`\?\)"),
        ({}, ["batch_size=abc"], r"batch_size: expected an integer, got 'abc'"),
        ({}, ["batch_size=1.5"], r"batch_size: expected an integer"),
        ({}, ["method=qlora"], r"method: must be one of \['full', 'lora'\]"),
        ({}, ["schedule=step"], r"schedule: must be one of"),
        ({}, ["gradient_checkpointing=3"], r"gradient_checkpointing: expected true/false"),
        ({}, ["betas=[0.9]"], r"betas: expected a list of 2 values"),
        ({"data": [{"phase": 1}]}, [], r"data\[0\]"),
        ({"data": [{"path": "a", "phse": 1}]}, [], r"unknown key `data\[0\].phse` \(did you mean `data\[0\].phase`\?\)"),
        ({}, ["batch_size=0"], r"batch_size must be >= 1"),
        ({}, ["max_length=4096", "max_tokens_per_micro_batch=2048"], r"exceeds max_tokens_per_micro_batch"),
        ({"strategy": "phased", "data": ["a.jsonl"]}, [], r"needs a `phase` on every data entry"),
        ({}, ["eval_fraction=1.0"], r"eval_fraction must be in"),
        ({}, ["lr"], r"not of the form key=value"),
        ({}, ["grad_clip=0"], r"grad_clip must be > 0, got 0.0; use grad_clip: null to disable clipping"),
        ({"grad_clip": -1.0}, [], r"grad_clip must be > 0, got -1.0; use grad_clip: null"),
        ({}, ["max_length=256", "max_tokens_per_row=128"],
         r"max_tokens_per_row \(128\) is less than max_length \(256\)"),
        ({}, ["dtype=float16"], r"dtype: float16 is not supported: .*gradient scaler.*use bfloat16"),
        ({"epochs": float("inf")}, [], r"epochs: must be a finite number, got inf"),
        ({}, ["learning_rate=.nan"], r"learning_rate: must be a finite number"),
        ({}, ["betas=[0.9, .inf]"], r"betas\[1\]: must be a finite number"),
        ({}, ["max_steps=.inf"], r"max_steps: expected int \| None, got inf"),
        ({"chat_template": "{% for m in messages %}{{ m.content }"}, [],
         r"chat_template: not a valid Jinja template \(line 1: "),
    ],
)
def test_config_errors_name_the_key(raw: dict, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(raw, overrides)


def test_refusals_hold_for_direct_construction_and_their_valid_neighbours_load() -> None:
    """The checks live in ``__post_init__``, so a config built in code is refused like a YAML one."""
    for kwargs, key in (({"grad_clip": 0.0}, "grad_clip"), ({"dtype": "float16"}, "dtype"),
                        ({"max_length": 64, "max_tokens_per_row": 32}, "max_tokens_per_row"),
                        ({"learning_rate": float("nan")}, "learning_rate"), ({"epochs": float("inf")}, "epochs"),
                        ({"betas": (0.9, float("nan"))}, "betas")):
        with pytest.raises(ConfigError, match=key):
            TrainConfig.of(**kwargs)
    assert build_config({}, ["grad_clip=null"]).optim.grad_clip is None  # null is how clipping is turned off
    assert build_config({}, ["grad_clip=0.5"]).optim.grad_clip == 0.5
    assert build_config({}, ["max_length=128", "max_tokens_per_row=128"]).batch.max_tokens_per_row == 128
    assert {build_config({}, [f"dtype={d}"]).numerics.dtype for d in ("auto", "bfloat16", "float32")} == {
        "auto", "bfloat16", "float32"}


def test_data_shorthands() -> None:
    assert [d.path for d in build_config({"data": "a.jsonl"}).data] == ["a.jsonl"]
    assert [d.path for d in build_config({"data": ["a.jsonl", {"path": "b.csv", "phase": 2}]}).data] == ["a.jsonl", "b.csv"]


def test_parse_overrides_nested_and_yaml_values() -> None:
    assert parse_overrides(["lora.r=8", "lora.target_modules=[q_proj, v_proj]", "max_steps=null"]) == {
        "lora": {"r": 8, "target_modules": ["q_proj", "v_proj"]},
        "max_steps": None,
    }


def test_missing_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


def test_defaults_follow_the_recipe() -> None:
    cfg = TrainConfig.of()
    assert (cfg.optim.schedule, cfg.optim.warmup_steps, cfg.optim.weight_decay, cfg.optim.betas, cfg.optim.grad_clip) == (
        "constant", 0, 0.0, (0.9, 0.95), 1.0)


def test_nest_dotted_copies_nested_values_and_names_conflicts() -> None:
    fixed = {"lora": {"r": 8}}
    assert nest_dotted({**fixed, "lora.alpha": 16, "learning_rate": 1e-4}) == {
        "lora": {"r": 8, "alpha": 16}, "learning_rate": 1e-4}
    assert fixed == {"lora": {"r": 8}}  # the caller's mapping is left as it was
    with pytest.raises(ConfigError, match="`lora.r` conflicts with `lora`"):
        nest_dotted({"lora": 8, "lora.r": 8})
    with pytest.raises(ConfigError, match="override `lora.r=8` conflicts with another override"):
        parse_overrides(["lora=1", "lora.r=8"])


def test_transformers_names_load_as_their_tunescout_keys() -> None:
    cfg = build_config({"num_train_epochs": 3, "max_grad_norm": 0.5, "lr_scheduler_type": "cosine",
                        "adam_beta1": 0.85, "adam_beta2": 0.999, "adam_epsilon": 1e-6, "warmup_ratio": 0.1})
    assert (cfg.batch.epochs, cfg.optim.grad_clip, cfg.optim.schedule, cfg.optim.betas, cfg.optim.eps, cfg.optim.warmup_ratio) == (
        3.0, 0.5, "cosine", (0.85, 0.999), 1e-6, 0.1)
    assert cfg.optim.warmup_for(95) == 10  # ceil(9.5), as transformers rounds it
    assert build_config({"max_grad_norm": 0}).optim.grad_clip is None  # transformers clips only when > 0
    assert build_config({"adam_beta2": 0.99}).optim.betas == (0.9, 0.99)  # the other beta keeps tunescout's
    assert build_config({"betas": [0.8, 0.9]}, ["adam_beta2=0.99"]).optim.betas == (0.8, 0.99)
    assert build_config({"epochs": 2}, ["num_train_epochs=4"]).batch.epochs == 4.0  # an override may rename
    for hf, ours in (("linear", "linear"), ("constant", "constant"), ("constant_with_warmup", "constant")):
        assert build_config({"lr_scheduler_type": hf}).optim.schedule == ours
    assert build_config({"lr_scheduler_type": "constant_with_warmup", "warmup_steps": 5}).optim.warmup_steps == 5


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"num_train_epochs": 2, "epochs": 1}, r"`num_train_epochs` is transformers' name for `epochs`: give one"),
        ({"max_grad_norm": 1.0, "grad_clip": 1.0}, r"`max_grad_norm` .* `grad_clip`"),
        ({"lr_scheduler_type": "linear", "schedule": "cosine"}, r"`lr_scheduler_type` .* `schedule`"),
        ({"adam_beta1": 0.9, "betas": [0.9, 0.95]}, r"`adam_beta1` .* `betas`"),
        ({"adam_epsilon": 1e-6, "eps": 1e-8}, r"`adam_epsilon` .* `eps`"),
        ({"lr_scheduler_type": "polynomial"}, r"lr_scheduler_type: 'polynomial' has no tunescout schedule"),
        ({"lr_scheduler_type": "constant", "warmup_ratio": 0.1}, r"`constant` has no warmup in transformers"),
        ({"num_train_epochs": "two"}, r"num_train_epochs: expected a number"),
        ({"warmup_steps": 0.1}, r"warmup_steps: 0.1 .* use `warmup_ratio: 0.1`"),
        ({"warmup_steps": 10, "warmup_ratio": 0.1}, r"warmup_steps \(10\) and warmup_ratio \(0.1\)"),
        ({"warmup_ratio": 1.5}, r"warmup_ratio must be in \[0, 1\]"),
        ({"per_device_train_batch_size": 4, "gradient_accumulation_steps": 8},
         r"`per_device_train_batch_size` and `gradient_accumulation_steps`: not tunescout settings.*"
         r"`batch_size`.*`max_tokens_per_micro_batch`.*x 1 process\(es\) is `batch_size: 32`"),
        ({"gradient_accumulation_steps": 2}, r"per_device_train_batch_size=8 x gradient_accumulation_steps=2"),
        ({"per_device_train_batch_size": 0}, r"per_device_train_batch_size: expected a positive integer"),
    ],
)
def test_transformers_names_refused_with_the_reason(raw: dict, message: str, monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match=message):
        build_config(raw)


def test_batch_refusal_counts_the_processes(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match=r"x 4 process\(es\) is `batch_size: 64`"):
        build_config({}, ["per_device_train_batch_size=2", "gradient_accumulation_steps=8"])


def test_settings_read_grouped_and_are_written_flat_or_grouped(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("optim: {learning_rate: 1.0e-4, schedule: cosine}\nbatch_size: 16\n")
    cfg = load_config(path, ["batch.max_steps=5", "lr=3e-4"])  # a grouped override and a flat alias
    assert (cfg.optim.learning_rate, cfg.optim.schedule, cfg.batch.batch_size, cfg.batch.max_steps) == \
           (3e-4, "cosine", 16, 5)
    flat = cfg.to_dict()
    assert flat["learning_rate"] == 3e-4 and "optim" not in flat  # stores and run directories keep flat names
    assert build_config(flat) == cfg
    changed = cfg.updated(learning_rate=1e-3, output={"save_model": False})
    assert changed.optim.learning_rate == 1e-3 and not changed.output.save_model and cfg.output.save_model
    assert changed.optim.schedule == "cosine" and changed.batch == cfg.batch  # the rest as it was
    dotted = cfg.updated(**{"lora.r": 8, "optim.warmup_steps": 3})  # as a grid names them
    assert (dotted.lora.r, dotted.lora.dropout, dotted.optim.warmup_steps) == (8, cfg.lora.dropout, 3)
    nested = dotted.updated(lora={"dropout": 0.1})  # the adapter's other settings stay
    assert (nested.lora.r, nested.lora.dropout) == (8, 0.1)


@pytest.mark.parametrize(("raw", "match"), [
    ({"optim": {"batch_size": 8}}, r"unknown key `optim.batch_size` \(it belongs to `batch`\)"),
    ({"optim": {"learnin_rate": 1}}, r"unknown key `optim.learnin_rate` \(did you mean `optim.learning_rate`\?\)"),
    ({"batch": 32}, r"batch: expected a mapping of its settings \(batch_size, "),
    ({"optim": {"learning_rate": -1.0}}, "learning_rate must be positive"),
])
def test_grouped_keys_are_checked_like_flat_ones(raw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        build_config(raw)
    with pytest.raises(ConfigError, match="learning_rate must be positive"):
        TrainConfig.of(model="m").updated(learning_rate=-1.0)
