"""Prepared data on disk: a study tokenises each dataset once, and a cached read is the same data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

import tunescout.data.cache as cache
from tunescout.config import DataSource, TrainConfig
from tunescout.data.cache import cached_prepare, tokenizer_fingerprint
from tunescout.data.prepare import prepare_for


def _chats(path: Path, n: int = 12, word: str = "apple") -> Path:
    rows = [{"messages": [{"role": "user", "content": f"{word} {i}?"}, {"role": "assistant", "content": f"{i}"}]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(data: Path, model: str = "m", **kw) -> TrainConfig:
    return TrainConfig.of(model=model, data=[DataSource(str(data))], max_length=64, max_tokens_per_micro_batch=256,
                          eval_fraction=0.25, **kw)


def _bare_tokenizer(model_dir: Path):
    """The tiny tokenizer without its chat template, as a model that ships none."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = None
    return tokenizer


def _refuse(*args, **kw):
    raise AssertionError("tokenised again: the cache was not read")


def test_a_second_run_reads_what_the_first_prepared(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    config = _config(_chats(tmp_path / "a.jsonl"))
    first_tok = _bare_tokenizer(tiny_model_dir)
    fingerprint = tokenizer_fingerprint(first_tok)
    fresh = cached_prepare(config, first_tok, fingerprint, tmp_path / "cache")
    assert fresh.chat and len(list((tmp_path / "cache").glob("*.json.gz"))) == 1

    monkeypatch.setattr(cache, "prepare_for", _refuse)
    second_tok = _bare_tokenizer(tiny_model_dir)
    assert tokenizer_fingerprint(second_tok) == fingerprint
    again = cached_prepare(config, second_tok, fingerprint, tmp_path / "cache")
    assert again == fresh  # samples, held-out rows, phases, stats: equal, field by field
    assert second_tok.chat_template == first_tok.chat_template is not None  # the template preparing installed


@pytest.mark.parametrize("change", ["content", "setting", "tokenizer"])
def test_what_tokenisation_depends_on_names_another_entry(change: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    data = _chats(tmp_path / "a.jsonl")
    tokenizer = _bare_tokenizer(tiny_model_dir)
    cached_prepare(_config(data), tokenizer, tokenizer_fingerprint(tokenizer), tmp_path / "cache")
    config, other = _config(data), _bare_tokenizer(tiny_model_dir)
    if change == "content":
        _chats(data, word="pear")  # the same path, rewritten
    elif change == "setting":
        config = config.updated(max_length=32)
    else:
        other.add_tokens(["<extra>"])
    changed = cached_prepare(config, other, tokenizer_fingerprint(other), tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.json.gz"))) == 2
    assert changed == prepare_for(config, _bare_tokenizer(tiny_model_dir) if change != "tokenizer" else other)


def test_a_damaged_entry_is_prepared_again(tiny_model_dir: Path, tmp_path: Path, caplog) -> None:
    config = _config(_chats(tmp_path / "a.jsonl"))
    tokenizer = _bare_tokenizer(tiny_model_dir)
    fingerprint = tokenizer_fingerprint(tokenizer)
    fresh = cached_prepare(config, tokenizer, fingerprint, tmp_path / "cache")
    [entry] = (tmp_path / "cache").glob("*.json.gz")
    entry.write_bytes(entry.read_bytes()[:40])  # cut short, as by a full disk
    assert cached_prepare(config, tokenizer, fingerprint, tmp_path / "cache") == fresh
    assert "unreadable" in caplog.text


def test_training_reads_the_data_a_driver_prepared(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from tunescout.train import train

    config = _config(_chats(tmp_path / "a.jsonl"), model=str(tiny_model_dir), batch_size=4, max_steps=2,
                     output_dir=str(tmp_path / "run"), progress=False, learning_rate=1e-3)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    cached_prepare(config, tokenizer, tokenizer_fingerprint(tokenizer), tmp_path / "cache")
    monkeypatch.setattr(cache, "prepare_for", _refuse)
    result = train(config, data_cache=tmp_path / "cache")
    assert result.status == "completed" and result.data["train_samples"] == 9 and result.data["eval_samples"] == 3
