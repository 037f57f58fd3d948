"""Prepared data kept on disk, so a study tokenises each dataset once.

A sweep tokenises every dataset in the driver to plan each trial's compute; each trial would then
tokenise it again. With a cache folder (the study's storage, which every trial already reaches),
the driver writes what it prepared and the trials read it back.

A cache entry is named by a digest of everything tokenisation depends on: the data files'
*contents* (:func:`~tunescout.data.digest.file_digest`), every setting :func:`prepare_for` reads,
and the tokenizer's own fingerprint taken right after loading (vocabulary, special tokens, chat
template, class). A changed file, setting or tokenizer names another entry; nothing is ever
invalidated in place. Entries are JSON (token ids and indices only), written to a temporary file
and renamed, so a reader sees a whole entry or none, and reading one runs no code.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from tunescout.config import TrainConfig
from tunescout.data.digest import file_digest
from tunescout.data.phases import Phase
from tunescout.data.prepare import PreparedData, data_key, prepare_for
from tunescout.data.tokenize import TokenizedSample, TokenizeStats, ensure_chat_template

__all__ = ["cached_prepare", "keep_prepared", "read_prepared", "tokenizer_fingerprint"]

log = logging.getLogger(__name__)

FORMAT = 1
"""Bumped when an entry's layout or tokenisation changes meaning: old entries are then unread."""


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A digest of what a tokenizer does to text, taken right after it is loaded (preparing data
    may install a chat template on it, which the settings in the cache key already cover)."""
    parts = {"class": type(tokenizer).__name__, "vocab": sorted(tokenizer.get_vocab().items()),
             "special": sorted((k, str(v)) for k, v in tokenizer.special_tokens_map.items()),
             "template": getattr(tokenizer, "chat_template", None),
             "bos": getattr(tokenizer, "add_bos_token", None), "eos": getattr(tokenizer, "add_eos_token", None)}
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def _entry_name(config: TrainConfig, fingerprint: str) -> str:
    sources = [{**dataclasses.asdict(s), "path": s.path if s.hub else file_digest(s.path)}
               for s in [*config.data, *config.evaluation.eval_data]]
    settings = data_key(config)[3:]  # the key's tokenizer name and paths are replaced by contents
    text = json.dumps([FORMAT, fingerprint, len(config.data), sources, settings], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24] + ".json.gz"


def _to_json(data: PreparedData) -> dict[str, Any]:
    def samples(xs: list[TokenizedSample]) -> list[list]:
        return [[list(s.input_ids), list(s.labels), s.source] for s in xs]

    return {"format": FORMAT, "chat": data.chat, "train": samples(data.train), "eval": samples(data.eval),
            "phases": [[p.number, list(p.indices), p.epochs] for p in data.phases],
            "stats": dataclasses.asdict(data.stats)}


def _from_json(doc: dict[str, Any]) -> PreparedData:
    def samples(rows: list[list]) -> list[TokenizedSample]:
        return [TokenizedSample(tuple(ids), tuple(labels), source) for ids, labels, source in rows]

    stats = TokenizeStats(**{**doc["stats"], "by_source": {int(k): v for k, v in doc["stats"]["by_source"].items()}})
    phases = [Phase(number, tuple(indices), epochs) for number, indices, epochs in doc["phases"]]
    return PreparedData(samples(doc["train"]), samples(doc["eval"]), phases, stats, bool(doc["chat"]))


def _read(path: Path) -> dict[str, Any] | None:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError) as exc:  # a damaged entry is prepared again, not trusted
        log.warning("data cache: %s is unreadable (%s); tokenising again", path, exc)
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == FORMAT else None


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json.gz")
    try:
        with os.fdopen(fd, "wb") as raw, gzip.open(raw, "wt", encoding="utf-8", compresslevel=1) as f:
            json.dump(doc, f, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_prepared(config: TrainConfig, tokenizer: Any, fingerprint: str, cache_dir: Path) -> PreparedData | None:
    """The data ``prepare_for(config, tokenizer)`` would give, when ``cache_dir`` holds them; else None.

    Args:
        fingerprint: :func:`tokenizer_fingerprint` of ``tokenizer`` as loaded.

    A read does to the tokenizer what preparing does: a chat template goes on it when the rows
    were chats (``ensure_chat_template``), so generation afterwards sees the same one.
    """
    path = Path(cache_dir) / _entry_name(config, fingerprint)
    doc = _read(path)
    if doc is None:
        return None
    data = _from_json(doc)
    if data.chat:
        ensure_chat_template(tokenizer, config.processing.chat_template)
    log.info("data: %s (prepared earlier: %s)", data.stats.summary(), path.name)
    return data


def keep_prepared(config: TrainConfig, fingerprint: str, data: PreparedData, cache_dir: Path) -> None:
    """Write ``data`` (prepared for ``config`` with the tokenizer of ``fingerprint``) to ``cache_dir``."""
    _write(Path(cache_dir) / _entry_name(config, fingerprint), _to_json(data))


def cached_prepare(config: TrainConfig, tokenizer: Any, fingerprint: str, cache_dir: Path | None) -> PreparedData:
    """``prepare_for(config, tokenizer)``, read from ``cache_dir`` when an earlier call (the sweep
    driver, another trial) prepared the same data, else prepared and written there; ``cache_dir``
    None prepares without a cache."""
    if cache_dir is None:
        return prepare_for(config, tokenizer)
    data = read_prepared(config, tokenizer, fingerprint, cache_dir)
    if data is None:
        data = prepare_for(config, tokenizer)
        keep_prepared(config, fingerprint, data, cache_dir)
    return data
