"""Read training data from files, folders or the hub and normalise every row to one shape.

Three shapes are accepted, and everything downstream sees only these:

* ``{"messages": [{"role": ..., "content": ...}, ...]}`` — chat;
* ``{"prompt": ..., "completion": ...}`` — single turn (Alpaca's ``instruction``/``input``/
  ``output`` columns are mapped onto it);
* TRL's conversational ``{"prompt": [messages], "completion": [messages]}`` becomes a chat that
  remembers where its completion starts (the loss is on the completion messages only), and
  ``{"prompt": [messages]}`` a prompt-only chat (an evaluation prompt, nothing to train on);
* ``{"text": ...}`` — plain text, loss on every token.

A row that fits none of them is an error that names the file and line (or row index) and says
what is wrong, because a silently skipped row is a silently different experiment.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

__all__ = ["DataError", "Example", "read_examples", "normalise_row"]

ROLES = ("system", "user", "assistant", "tool")


class DataError(ValueError):
    """A data file is missing or holds a malformed row; the message says where."""


@dataclass(frozen=True)
class Example:
    """One normalised training row and where it came from."""

    kind: str
    """``messages``, ``prompt_completion`` or ``text``."""
    messages: tuple[dict[str, str], ...] = ()
    completion_from: int | None = None
    """For a TRL conversational prompt/completion row: the index in ``messages`` where the
    completion starts (its messages carry the loss, rendered as the continuation of the prompt);
    ``len(messages)`` for a prompt-only row. ``None`` for an ordinary chat."""
    prompt: str = ""
    completion: str = ""
    text: str = ""
    where: str = ""
    """``file:line`` (or ``file[row]``) for error messages."""


def _check_str(value: Any, what: str, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: `{what}` must be a string, got {type(value).__name__}")
    return value


def normalise_row(row: Any, where: str) -> Example:
    """Map one raw row to an :class:`Example`.

    Raises:
        DataError: the row is not a mapping or fits none of the three shapes.
    """
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object, got {type(row).__name__}")
    # Columnar files (Parquet, datasets) fill the columns a row does not use with None: match the
    # shape on the filled fields first, and on all of them only to explain what is wrong.
    filled = {k: v for k, v in row.items() if v is not None}
    example = _match_shape(filled, where) or _match_shape(row, where)
    if example is None:
        keys = ", ".join(sorted(map(str, row))) or "none"
        raise DataError(f"{where}: no `messages`, `prompt`/`completion` or `text` field (keys: {keys})")
    return example


def _match_shape(row: dict[str, Any], where: str) -> Example | None:
    """The row as an Example, None when it has none of the shapes' keys, DataError when malformed."""
    if "messages" in row or "conversations" in row:
        raw = row.get("messages", row.get("conversations"))
        if isinstance(raw, str):  # CSV cells carry the list as JSON text
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: `messages` is not valid JSON ({exc.msg})") from None
        return Example("messages", messages=_messages(raw, "messages", where), where=where)
    if isinstance(row.get("prompt"), list):  # a string prompt is the plain shape below
        return _conversational(row, where)
    if "prompt" in row or "completion" in row:
        if "prompt" not in row or "completion" not in row:
            present, missing = ("prompt", "completion") if "prompt" in row else ("completion", "prompt")
            raise DataError(f"{where}: has `{present}` but no `{missing}`")
        return Example(
            "prompt_completion",
            prompt=_check_str(row["prompt"], "prompt", where),
            completion=_check_str(row["completion"], "completion", where),
            where=where,
        )
    if "instruction" in row and "output" in row:
        prompt = _check_str(row["instruction"], "instruction", where)
        extra = row.get("input") or ""
        if extra:
            prompt = f"{prompt}\n\n{_check_str(extra, 'input', where)}"
        return Example("prompt_completion", prompt=prompt,
                       completion=_check_str(row["output"], "output", where), where=where)
    if "text" in row:
        return Example("text", text=_check_str(row["text"], "text", where), where=where)
    return None


def _messages(raw: Any, name: str, where: str) -> tuple[dict[str, str], ...]:
    """A non-empty list of ``{role, content}`` (or ShareGPT ``{from, value}``) messages, checked."""
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{where}: `{name}` must be a non-empty list")
    messages = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict):
            raise DataError(f"{where}: {name}[{i}] must be an object")
        role = msg.get("role", msg.get("from"))
        content = msg.get("content", msg.get("value"))
        role = {"human": "user", "gpt": "assistant"}.get(role, role)
        if role not in ROLES:
            raise DataError(f"{where}: {name}[{i}] has role {role!r}; expected one of {list(ROLES)}")
        messages.append({"role": role, "content": _check_str(content, f"{name}[{i}].content", where)})
    return tuple(messages)


def _conversational(row: dict[str, Any], where: str) -> Example:
    """TRL's conversational prompt/completion (or prompt-only) row: both fields lists of messages."""
    if "completion" in row and not isinstance(row["completion"], list):
        raise DataError(f"{where}: `prompt` is a list of messages but `completion` is a "
                        f"{type(row['completion']).__name__}; give both as lists (TRL's conversational "
                        "format) or both as strings")
    prompt = _messages(row["prompt"], "prompt", where)
    completion = _messages(row["completion"], "completion", where) if "completion" in row else ()
    return Example("messages", messages=prompt + completion, completion_from=len(prompt), where=where)


def _jsonl_rows(path: Path) -> Iterator[tuple[Any, str]]:
    with path.open(encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                yield json.loads(line), where
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None


def _json_rows(path: Path) -> Iterator[tuple[Any, str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows (or {{\"data\": [...]}})")
    for i, row in enumerate(data):
        yield row, f"{path}[row {i}]"


def _csv_rows(path: Path) -> Iterator[tuple[Any, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        lines = csv.reader(fh)
        header = next(lines, None)
        if header is None:
            return
        end = lines.line_num  # physical line where the previous record ended
        for cells in lines:
            # csv.reader yields [] for a blank line, so every physical line is accounted for and
            # a record (which may span lines through quoted newlines) starts right after the last.
            start, end = end + 1, lines.line_num
            if not cells:
                continue
            if len(cells) != len(header):
                raise DataError(f"{path}:{start}: row has {len(cells)} cells but the header has {len(header)} columns")
            yield dict(zip(header, cells)), f"{path}:{start}"


def _parquet_rows(path: Path) -> Iterator[tuple[Any, str]]:
    import pyarrow.parquet as pq

    for i, row in enumerate(pq.read_table(path).to_pylist()):
        yield row, f"{path}[row {i}]"


def _datasets_rows(path: str, split: str, hub: bool) -> Iterator[tuple[Any, str]]:
    import datasets

    if hub:
        ds = datasets.load_dataset(path, split=split)
    else:
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{path}: no split {split!r} (has {list(ds)})")
            ds = ds[split]
    for i, row in enumerate(ds):
        yield row, f"{path}[{split} row {i}]"


READERS = {".jsonl": _jsonl_rows, ".json": _json_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}


def _raw_rows(path: str, split: str, hub: bool) -> Iterable[tuple[Any, str]]:
    local = Path(path)
    if local.is_dir():
        return _datasets_rows(path, split, hub=False)
    if local.is_file():
        reader = READERS.get(local.suffix.lower())
        if reader is None:
            raise DataError(f"{path}: unsupported file type {local.suffix!r} (use {', '.join(READERS)})")
        return reader(local)
    if hub:
        return _datasets_rows(path, split, hub=True)
    raise DataError(f"{path}: no such file or folder (set `hub: true` on this data entry to load a hub dataset)")


def read_examples(path: str, split: str = "train", hub: bool = False) -> list[Example]:
    """Read and normalise every row of one data source.

    Args:
        path: a ``.jsonl``/``.json``/``.csv``/``.parquet`` file, a folder saved with
            ``datasets.save_to_disk``, or (only with ``hub=True``) a hub dataset id.
        split: split to take from a ``datasets`` folder or hub dataset.
        hub: allow a download from the hub when ``path`` is not local.

    Raises:
        DataError: missing source, unsupported type, or a malformed row (file and line named).
    """
    examples = [normalise_row(row, where) for row, where in _raw_rows(path, split, hub)]
    if not examples:
        raise DataError(f"{path}: no rows")
    return examples
