"""A run's identity: the part of its config that can change what it trains, and its hash.

Two uses, one definition. A study trial's id hashes this identity, so changing ``epochs``, a
schedule or the *contents* of a data file gives new trials instead of old results reported
under new settings. And a run directory records it, so resuming a run whose config changed
since its checkpoint is refused instead of stitching two different runs into one.

Data files enter by content digest (cached, see :mod:`tunescout.data.digest`), not by path:
moving a study folder keeps its trials; editing a file in place does not.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tunescout.config import ConfigError, TrainConfig
from tunescout.data.digest import file_digest

__all__ = ["ADDED_KEYS", "NON_RESULT_KEYS", "RUN_FILE", "ResumeMismatch", "check_resume", "config_hash", "identity_diff",
           "record_run", "recorded", "run_identity"]

NON_RESULT_KEYS = ("output_dir", "progress", "checkpoint_every", "save_model", "merge_lora", "eval_every",
                   "eval_at_samples", "track", "track_group", "trust_remote_code")
"""Settings that cannot change the trained weights or the final scores, left out of the identity.

Where a run is written, whether a bar is shown, how often it checkpoints, what it saves at the
end, which experiment trackers mirror it (``track``) and whether a model folder's own code may run
(``trust_remote_code``: refused, it produces no run at all) do not touch training; nor do the extra
evaluation points (evaluation runs in eval mode with
greedy decoding and draws no random numbers; a test trains with and without them and compares
weights bit for bit). A sweep adds evaluation points a stopping rule needs, so they must not
make a trial a different trial. Everything else counts, numerics included (``dtype``, micro-batch
budget, attention kernel): a different rounding is a different run.
"""

ADDED_KEYS = {"compile": False, "liger": False, "warmup_ratio": None}
"""Settings added after identities were first recorded, with the value every earlier run had.

They count like any other setting (``compile`` and ``liger`` change the rounding, ``warmup_ratio``
the schedule), but enter
the identity only when set away from that value: a config that leaves them alone hashes as it
did before they existed, so recorded trials keep their ids and recorded runs stay resumable.
"""

RUN_FILE = "run.json"

RUN_LENGTH = "total-cycling"
"""What ``max_steps``/``max_samples`` mean, in the identity of every run that sets one: since
they became totals that cycle through the data (as in HF), a run with ``max_steps`` past its
epochs trains longer than it did, under the same settings. Marking them makes those runs new
trials (and refuses resuming an old one under the new meaning) instead of mixing results of
two meanings under one id; runs without either keep their ids."""


class ResumeMismatch(ConfigError):
    """A run directory holds a run of another config than the one asked to resume it."""


def _source_identity(source: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in source.items() if k != "path"}
    out["content"] = source["path"] if source.get("hub") else file_digest(source["path"])
    return out


def run_identity(config: TrainConfig) -> dict[str, Any]:
    """The config as a plain dict, without :data:`NON_RESULT_KEYS` (nor :data:`ADDED_KEYS` at their
    old value), data files by content digest.

    Raises:
        FileNotFoundError: a local data file that does not exist.
    """
    raw = config.to_dict()
    for key in NON_RESULT_KEYS:
        raw.pop(key)
    for key, before in ADDED_KEYS.items():
        if raw.get(key) == before:
            raw.pop(key)
    for key in ("data", "eval_data"):
        raw[key] = [_source_identity(s) for s in raw[key]]
    raw["betas"] = list(raw["betas"])
    if raw.get("max_steps") is not None or raw.get("max_samples") is not None:
        raw["run_length"] = RUN_LENGTH
    return raw


def config_hash(identity: dict[str, Any]) -> str:
    """A short, stable hash of an identity (or of any JSON-able mapping)."""
    text = json.dumps(identity, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}[{i}]", out)
        out.setdefault(f"{prefix}.len", len(value))
    else:
        out[prefix] = value


def identity_diff(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every setting that differs (absent is None)."""
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    _flatten(old, "", a)
    _flatten(new, "", b)
    return [(k, a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def record_run(run_dir: str | Path, identity: dict[str, Any], resolved: dict[str, Any] | None = None) -> None:
    """Write ``run.json`` into a run directory, atomically: the identity, its hash, and the
    settings ``auto`` resolved to on this machine (device, dtype, attention kernel, packing)."""
    path = Path(run_dir) / RUN_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"config_hash": config_hash(identity), "identity": identity, "resolved": resolved},
                              indent=2, default=str))
    tmp.replace(path)


def recorded(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """``(identity, resolved)`` a run directory recorded, or None when it holds no run config.

    A directory written before ``run.json`` existed is judged by its ``config.yaml``: the same
    identity computed from it (data digests as the files are now), nothing resolved.

    Raises:
        ConfigError: the record is unreadable or describes no valid config.
    """
    path = Path(run_dir) / RUN_FILE
    if path.exists():
        try:
            data = json.loads(path.read_text())
            return data["identity"], data.get("resolved")
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: unreadable run record ({exc}); use --restart to start the run over") from None
    legacy = Path(run_dir) / "config.yaml"
    if not legacy.exists():
        return None
    import yaml

    from tunescout.config import build_config

    try:
        return run_identity(build_config(yaml.safe_load(legacy.read_text()) or {})), None
    except (ConfigError, FileNotFoundError, yaml.YAMLError) as exc:
        raise ConfigError(f"{legacy}: cannot tell which run this directory holds ({exc}); "
                          "use --restart to start it over") from None


def check_resume(run_dir: str | Path, identity: dict[str, Any], resolved: dict[str, Any] | None = None) -> None:
    """Refuse to continue a run directory whose recorded run differs from this one.

    Both the identity and what ``auto`` settings resolved to must match: a run checkpointed in
    float32 on a CPU does not continue in bfloat16 on a GPU as if it were one run.

    Raises:
        ResumeMismatch: naming every differing key with both values.
        ConfigError: the directory's record is unreadable.
    """
    found = recorded(run_dir)
    if found is None:
        return
    old, old_resolved = found
    diff = identity_diff(old, identity)
    if old_resolved is not None and resolved is not None:
        diff += [(f"resolved.{k}", a, b) for k, a, b in identity_diff(old_resolved, resolved)]
    if not diff:
        return
    shown = "; ".join(f"{k}: {a!r} in the run, {b!r} now" for k, a, b in diff[:12])
    more = f" (and {len(diff) - 12} more)" if len(diff) > 12 else ""
    raise ResumeMismatch(f"{run_dir} holds a run of a different config, so it cannot be resumed: {shown}{more}. "
                         "Nothing was changed; use --restart to start it over, or another output_dir")
