"""Content digests of data files, cached by path, size and modification time.

A trial's identity includes what its data files *hold*, not only their names: a training file
regenerated in place must give new trials. Hashing a multi-GB file on every sweep would be slow,
so a digest is kept in a small JSON cache (``$XDG_CACHE_HOME/tunescout/digests.json``) keyed by
the resolved path, size and ``st_mtime_ns``; any change to the file misses the cache. The cache
keeps the :data:`MAX_ENTRIES` paths hashed last: without a bound it grew by every temporary data
file ever digested (a test suite leaves thousands), and each miss re-reads and rewrites it whole.
An evicted file only costs a re-hash.

A glob data path (``data/part-*.jsonl``) digests every file it expands to, by name (relative to
the pattern's fixed folder, so moving a study folder keeps its trials) and cached digest: adding,
removing, renaming or editing a part gives new trials.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
from pathlib import Path

from tunescout.data.formats import expand_glob, is_glob

__all__ = ["file_digest"]

MAX_ENTRIES = 512
_MEMO: dict[str, tuple[str, str]] = {}
_CHUNK = 1 << 20


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tunescout" / "digests.json"


def _read_cache(path: Path) -> dict[str, list[str]]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # a missing or torn cache only costs a re-hash


def _write_cache(path: Path, cache: dict[str, list[str]]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".digests-")
        with os.fdopen(fd, "w") as fh:
            json.dump(cache, fh)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache folder is no reason to fail a study


def _hash_path(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():  # a saved `datasets` folder: names and contents of every file
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _stamp(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    parts = [f"{f}:{(s := f.stat()).st_size}:{s.st_mtime_ns}" for f in files]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()


def _glob_digest(pattern: str) -> str:
    """``sha256:<hex>`` over the names and digests of the files a glob expands to, in sorted order."""
    matches = expand_glob(pattern)
    if not matches:
        raise FileNotFoundError(f"no data files match {pattern}")
    root = Path(*itertools.takewhile(lambda part: not is_glob(part), Path(pattern).parts))
    digest = hashlib.sha256()
    for match in matches:
        digest.update(f"{os.path.relpath(match, root)}\0{file_digest(match)}\n".encode())
    return "sha256:" + digest.hexdigest()


def file_digest(path: str | Path) -> str:
    """``sha256:<hex>`` of a file's bytes (or of every file of a folder, with their names; or of
    every file a glob pattern expands to, with their names).

    Raises:
        FileNotFoundError: nothing at ``path`` (or a glob matching nothing).
    """
    if not Path(path).exists() and is_glob(str(path)):
        return _glob_digest(str(path))
    path = Path(path).resolve()
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    stamp = _stamp(path)
    if _MEMO.get(str(path), ("", ""))[0] == stamp:
        return _MEMO[str(path)][1]
    cache_file = _cache_file()
    cache = _read_cache(cache_file)
    entry = cache.get(str(path))
    if not (isinstance(entry, list) and len(entry) == 2 and entry[0] == stamp):
        entry = [stamp, "sha256:" + _hash_path(path)]  # one entry per path: a changed file replaces its own
        cache.pop(str(path), None)
        cache[str(path)] = entry  # last in order: the oldest hashes go first
        for stale in list(cache)[:-MAX_ENTRIES]:
            del cache[stale]
        _write_cache(cache_file, cache)
    _MEMO[str(path)] = (stamp, entry[1])
    return entry[1]
