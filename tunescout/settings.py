"""Nested settings as YAML and the command line give them: dotted keys (``lora.r=8``),
``key=value`` overrides, merging, and the one wording of every "unknown key" hint.

Shared by train configs, studies, stopping rules, trackers and the CLI, so that a typo is
reported the same way wherever it is made.
"""

from __future__ import annotations

import copy
import difflib
import glob
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ConfigError", "as_number", "did_you_mean", "flatten_dotted", "merge_nested", "nest_dotted",
           "parse_overrides", "resolve_beside"]


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or inconsistent."""


def did_you_mean(key: str, valid: Sequence[str], prefix: str = "") -> str:
    """`` (did you mean `<prefix><name>`?)`` for the valid name closest to ``key``, or "" if none is close.

    Every "unknown key" error of tunescout (configs, studies, stopping rules) words its hint this way.
    """
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5) or [
        v for v in valid if key.startswith(v) or v.startswith(key)
    ]
    return f" (did you mean `{prefix}{close[0]}`?)" if close else ""


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """``tree[a][b] = value`` for ``key`` ``a.b``, creating the parent mappings."""
    *parents, last = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"`{key}` conflicts with `{part}`, which is set to a value")
    node[last] = value


def nest_dotted(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"lora.r": 8, "learning_rate": 1e-4}`` → ``{"lora": {"r": 8}, "learning_rate": 1e-4}``:
    dotted keys (grid axes, overrides) in the nested shape a train config takes.

    Raises:
        ConfigError: a key sets a field inside a key that also holds a value (``lora`` and ``lora.r``).
    """
    out: dict[str, Any] = {}
    for key, value in flat.items():
        # a copy: a nested value (``fixed: {lora: {r: 8}}``) may get keys set inside it (``lora.alpha``)
        _set_dotted(out, key, copy.deepcopy(value))
    return out


def flatten_dotted(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The inverse of :func:`nest_dotted`: ``{"lora": {"r": 8}}`` → ``{"lora.r": 8}``."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, Mapping):
            out.update(flatten_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ``["lr=1e-5", "lora.r=8"]`` into a nested dict; values are parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override `{item}` is not of the form key=value")
        key, text = item.split("=", 1)
        try:
            _set_dotted(out, key.strip(), yaml.safe_load(text) if text else None)
        except ConfigError:
            raise ConfigError(f"override `{item}` conflicts with another override") from None
    return out


def merge_nested(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, mappings merged key by key (an override replaces one leaf)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_nested(merged[key], value)
        else:
            merged[key] = value
    return merged


def as_number(key: str, value: Any) -> float:
    """``value`` as a finite float, or a ConfigError naming ``key``. A string is parsed: YAML 1.1
    reads ``1e-5`` (no dot) as one. NaN and infinity are refused: YAML spells them ``.nan`` and
    ``.inf``, and no setting means anything by them (``epochs: .inf`` would plan forever)."""
    number = None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    if number is None:
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if not math.isfinite(number):
        raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    return number


def resolve_beside(path: str, base: Path) -> str:
    """A relative path from a YAML file, resolved against the YAML's folder ``base`` when something
    is there (a file, a folder, or files a glob pattern matches); otherwise as given (a hub id,
    ``builtin:NAME``, or a path relative to the working directory)."""
    candidate = base / path
    if Path(path).is_absolute() or not (candidate.exists() or glob.glob(str(candidate), recursive=True)):
        return path
    return str(candidate)
