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
what is wrong, because a silently skipped row is a silently different experiment. So is unreadable
input (bytes that are not UTF-8, JSON nested past what the parser takes, a corrupt gzip stream): a
:class:`DataError` naming the file and, where the reader knows it, the line, never a traceback.

A path may be a glob (``data/part-*.jsonl``, read in sorted order) and ``.jsonl``, ``.json`` and
``.csv`` files may be gzipped (``.jsonl.gz``): the formats ``datasets.load_dataset`` users expect.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import itertools
import json
import logging
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

__all__ = ["DataError", "Example", "read_examples", "normalise_row", "is_glob", "expand_glob"]

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant", "tool")

CSV_FIELD_LIMIT = 256 << 20
"""Largest CSV cell read (characters). Python's csv stops at 128 KiB, but a long document in one cell is
legitimate data; the bound still turns a stray unclosed quote in a huge file into an error rather
than the whole rest of the file read into one cell."""

_JSON_ERRORS = (ValueError, RecursionError)
"""What ``json.loads`` raises on bad input: JSONDecodeError (a ValueError), a plain ValueError for
an integer past Python's digit limit, RecursionError for arrays or objects nested ~1000 deep."""


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


def _check_str(value: Any, what: str, where: str, hint: str = "") -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: `{what}` must be a string, got {type(value).__name__}{hint}")
    return value


def _describe(value: Any) -> str:
    """A value's JSON type in words (with a short preview of a string), for saying what was found."""
    if isinstance(value, str):
        return f"a string ({value[:30]!r}{'...' if len(value) > 30 else ''})"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    words = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", dict: "an object"}
    return words.get(type(value), type(value).__name__)


def _json_problem(exc: BaseException) -> str:
    """What is wrong with a JSON text, from one of :data:`_JSON_ERRORS`, in a few words."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "nested too deeply for Python's JSON parser"
    return str(exc)


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
        name = "messages" if "messages" in row else "conversations"
        raw = row[name]
        if isinstance(raw, str) and raw.lstrip().startswith("["):  # CSV cells carry the list as JSON text
            try:
                raw = json.loads(raw)
            except _JSON_ERRORS as exc:
                raise DataError(f"{where}: `{name}` is not valid JSON ({_json_problem(exc)})") from None
        return Example("messages", messages=_messages(raw, name, where), where=where)
    if isinstance(row.get("prompt"), list):  # a string prompt is the plain shape below
        return _conversational(row, where)
    if "prompt" in row or "completion" in row:
        if "prompt" not in row or "completion" not in row:
            present, missing = ("prompt", "completion") if "prompt" in row else ("completion", "prompt")
            raise DataError(f"{where}: has `{present}` but no `{missing}`")
        mixed = "; give both as lists of messages (TRL's conversational format) or both as strings"
        return Example(
            "prompt_completion",
            prompt=_check_str(row["prompt"], "prompt", where),
            completion=_check_str(row["completion"], "completion", where,
                                  mixed if isinstance(row["completion"], list) else ""),
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
        raise DataError(f"{where}: `{name}` must be a non-empty list of {{role, content}} turns, "
                        f"got {_describe(raw)}")
    messages = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict):
            raise DataError(f"{where}: {name}[{i}] must be an object with `role` and `content`, got {_describe(msg)}")
        role = msg.get("role", msg.get("from"))
        content = msg.get("content", msg.get("value"))
        if isinstance(role, str):  # a list or object role is unhashable: reported below, not a TypeError
            role = {"human": "user", "gpt": "assistant"}.get(role, role)
        if role not in ROLES:
            missing = " (no `role` field)" if "role" not in msg and "from" not in msg else ""
            raise DataError(f"{where}: {name}[{i}] has role {role!r}{missing}; expected one of {list(ROLES)}")
        missing = " (no `content` field)" if "content" not in msg and "value" not in msg else ""
        messages.append({"role": role, "content": _check_str(content, f"{name}[{i}].content", where, missing)})
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


def _open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, gunzipped when its name ends in ``.gz``."""
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")


@contextmanager
def _reading(path: Path, newline: str | None) -> Iterator[IO[str]]:
    """The file as UTF-8 text (a BOM skipped); decoding, gzip and I/O failures while it is read
    become a DataError naming the file (and the line of the first bad byte)."""
    try:
        with _open_binary(path) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline=newline) as fh:
            yield fh
    except UnicodeDecodeError:
        raise DataError(_not_utf8(path)) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from None


def _not_utf8(path: Path) -> str:
    """Where a file stops being UTF-8. The text reader decodes in chunks and so cannot say which
    line; this second pass, only on failure, can (a newline byte never occurs inside a UTF-8
    sequence, so line by line is exact)."""
    advice = "save it as UTF-8"
    with _open_binary(path) as raw:
        for lineno, line in enumerate(raw, start=1):
            if lineno == 1 and line.startswith((b"\xff\xfe", b"\xfe\xff")):
                return f"{path}: the file is UTF-16 text, not UTF-8; {advice}"
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                column = len(line[:exc.start].decode("utf-8", "replace")) + 1
                return f"{path}:{lineno}: not UTF-8 text (byte 0x{line[exc.start]:02x} at column {column}); {advice}"
    return f"{path}: not UTF-8 text; {advice}"


def _json_lines(path: Path, lines: Iterable[str]) -> Iterator[tuple[Any, str]]:
    """One JSON value per non-blank line, each error at its ``file:line``."""
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            yield json.loads(line), where
        except _JSON_ERRORS as exc:
            raise DataError(f"{where}: invalid JSON ({_json_problem(exc)})") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[Any, str]]:
    with _reading(path, newline=None) as fh:
        yield from _json_lines(path, fh)


def _is_json_lines(text: str, exc: json.JSONDecodeError) -> bool:
    """A ``.json`` file that failed to parse as one document holds JSON Lines (as
    ``datasets.load_dataset("json")`` accepts) when a complete value on the first line is followed
    by more: a one-document file with junk after a multi-line value keeps its own error."""
    return exc.msg == "Extra data" and "\n" not in text[:exc.pos].strip()


def _json_rows(path: Path) -> Iterator[tuple[Any, str]]:
    with _reading(path, newline=None) as fh:
        text = fh.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if _is_json_lines(text, exc):
            yield from _json_lines(path, io.StringIO(text))
            return
        raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    except _JSON_ERRORS as exc:
        raise DataError(f"{path}: invalid JSON ({_json_problem(exc)})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows (or {{\"data\": [...]}})")
    for i, row in enumerate(data):
        yield row, f"{path}[row {i}]"


def _allow_long_csv_cells() -> None:
    """Raise csv's process-wide cell size limit to :data:`CSV_FIELD_LIMIT` (never lower it)."""
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)


def _next_record(lines: Any, path: Path, start: int) -> list[str] | None:
    """The next CSV record (None at the end); csv's own errors, such as a cell past the size
    limit, as a DataError at the line where the record starts."""
    try:
        return next(lines, None)
    except csv.Error as exc:
        raise DataError(f"{path}:{start}: malformed CSV ({exc})") from None


def _csv_rows(path: Path) -> Iterator[tuple[Any, str]]:
    _allow_long_csv_cells()
    with _reading(path, newline="") as fh:
        lines = csv.reader(fh)
        header = _next_record(lines, path, 1)
        if header is None:
            return
        end = lines.line_num  # physical line where the previous record ended
        while (cells := _next_record(lines, path, end + 1)) is not None:
            # csv.reader yields [] for a blank line, so every physical line is accounted for and
            # a record (which may span lines through quoted newlines) starts right after the last.
            start, end = end + 1, lines.line_num
            if not cells:
                continue
            if len(cells) != len(header):
                raise DataError(f"{path}:{start}: row has {len(cells)} cells but the header has {len(header)} columns")
            yield dict(zip(header, cells)), f"{path}:{start}"


def _parquet_rows(path: Path) -> Iterator[tuple[Any, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    for i, row in enumerate(table.to_pylist()):
        yield row, f"{path}[row {i}]"


def _datasets_rows(path: str, split: str, hub: bool) -> Iterator[tuple[Any, str]]:
    import datasets

    if hub:
        ds = datasets.load_dataset(path, split=split)
    else:
        try:
            ds = datasets.load_from_disk(path)
        except FileNotFoundError:
            raise DataError(f"{path}: a folder not saved by `datasets.save_to_disk`; for a folder of data "
                            f"files give a glob, such as {Path(path) / '*.jsonl'}") from None
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{path}: no split {split!r} (has {list(ds)})")
            ds = ds[split]
    for i, row in enumerate(ds):
        yield row, f"{path}[{split} row {i}]"


READERS = {".jsonl": _jsonl_rows, ".json": _json_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}
GZIPPED = (".jsonl", ".json", ".csv")
"""Formats also read gzipped (``.jsonl.gz``); Parquet compresses inside the file."""


def _reader(path: Path) -> Any:
    """The row reader for a file's type, looking through a ``.gz`` ending."""
    name = path.name.lower()
    gzipped = name.endswith(".gz")
    suffix = Path(name.removesuffix(".gz")).suffix
    reader = READERS.get(suffix) if not gzipped or suffix in GZIPPED else None
    if reader is None:
        shown = suffix + ".gz" if gzipped else suffix
        raise DataError(f"{path}: unsupported file type {shown!r} (use {', '.join(READERS)}); "
                        f"{', '.join(GZIPPED)} may be gzipped (.gz)")
    return reader


def is_glob(path: str) -> bool:
    """Whether a data path is a glob pattern (read as one only when nothing exists at it, so a
    file whose name holds ``[`` stays a file)."""
    return any(c in path for c in "*?[")


def expand_glob(pattern: str) -> list[Path]:
    """What a glob data path names, in sorted order (so a study reads, and hashes, its parts in one
    fixed order); empty when nothing matches. ``**`` matches folders at any depth."""
    return [Path(match) for match in sorted(glob.glob(pattern, recursive=True))]


def _local_rows(path: Path, split: str) -> Iterable[tuple[Any, str]]:
    if path.is_dir():
        return _datasets_rows(str(path), split, hub=False)
    return _reader(path)(path)


def _raw_rows(path: str, split: str, hub: bool) -> Iterable[tuple[Any, str]]:
    local = Path(path)
    if local.exists():
        return _local_rows(local, split)
    if is_glob(path):
        matches = expand_glob(path)
        if not matches:
            raise DataError(f"{path}: no files match this pattern")
        return itertools.chain.from_iterable(_local_rows(m, split) for m in matches)
    if hub:
        return _datasets_rows(path, split, hub=True)
    raise DataError(f"{path}: no such file or folder (set `hub: true` on this data entry to load a hub dataset)")


def _warn_repeats(path: str, examples: list[Example]) -> None:
    """Log how many rows repeat an earlier row of the same source. Repeats are kept (a deliberate
    upsampling is legitimate) but are more often an accident that weights some rows twice and
    leaks between a training set and the part held out of it. Rows compare by what trains, not
    by their raw fields: an ``id`` column must not hide a repeated example. One hash per row."""
    seen: dict[int, str] = {}
    repeats: list[tuple[str, str]] = []
    for ex in examples:
        key = hash((ex.kind, ex.completion_from, ex.prompt, ex.completion, ex.text,
                    tuple((m["role"], m["content"]) for m in ex.messages)))
        if key in seen:
            repeats.append((ex.where, seen[key]))
        else:
            seen[key] = ex.where
    if repeats:
        where, earlier = repeats[0]
        noun = "row repeats" if len(repeats) == 1 else "rows repeat"
        log.warning("%s: %d %s an earlier row (first %s, a repeat of %s); they are kept",
                    path, len(repeats), noun, where, earlier)


def read_examples(path: str, split: str = "train", hub: bool = False) -> list[Example]:
    """Read and normalise every row of one data source.

    Args:
        path: a ``.jsonl``/``.json``/``.csv``/``.parquet`` file (the first three may be gzipped,
            ``.jsonl.gz``; a ``.json`` file may hold JSON Lines), a folder saved with
            ``datasets.save_to_disk``, a glob of those (``data/part-*.jsonl``, read in sorted
            order), or (only with ``hub=True``) a hub dataset id.
        split: split to take from a ``datasets`` folder or hub dataset.
        hub: allow a download from the hub when ``path`` is not local.

    Raises:
        DataError: missing source, a glob matching nothing, unsupported type, unreadable bytes
            or a malformed row (file and line named).
    """
    examples = [normalise_row(row, where) for row, where in _raw_rows(path, split, hub)]
    if not examples:
        raise DataError(f"{path}: no rows")
    _warn_repeats(path, examples)
    return examples
