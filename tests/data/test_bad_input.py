"""Bad and unusual data files: every failure is a one-line DataError naming the file and line (or
row), never a raw traceback; and the layouts ``datasets.load_dataset`` users expect (JSON Lines in a
``.json`` file, gzip, globs) are read."""

from __future__ import annotations

import csv
import gzip
import json
import logging
import re
from pathlib import Path

import pytest

from tunescout.data import digest, formats
from tunescout.data.formats import DataError, read_examples

CHAT = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


def jsonl(rows: list) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def raises_at(where: str, rest: str = ""):
    """pytest.raises(DataError) whose message starts with ``where`` (escaped) then ``rest`` (regex)."""
    return pytest.raises(DataError, match="^" + re.escape(where) + rest)


def one_line(exc: pytest.ExceptionInfo) -> None:
    """The message is one line and no chained exception would print its traceback under it."""
    error = exc.value
    assert "\n" not in str(error) and error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


# --------------------------------------------------------------------------- 1. not UTF-8


class TestNotUtf8:
    def test_jsonl_names_the_line_and_byte(self, tmp_path):
        path = tmp_path / "d.jsonl"
        path.write_bytes(b'{"text": "a"}\n\n{"text": "caf\xe9"}\n')
        with raises_at(f"{path}:3: not UTF-8 text (byte 0xe9 at column 14); save it as UTF-8") as exc:
            read_examples(str(path))
        one_line(exc)

    def test_bad_byte_past_the_first_decoded_chunk(self, tmp_path):
        path = tmp_path / "d.jsonl"
        path.write_bytes(jsonl([{"text": "é" * 50}] * 5000).encode() + b'{"text": "\xff"}\n')
        with raises_at(f"{path}:5001: not UTF-8 text (byte 0xff at column 11)"):
            read_examples(str(path))

    def test_json_names_the_line(self, tmp_path):
        path = tmp_path / "d.json"
        path.write_bytes(b'[\n  {"text": "a"},\n  {"text": "\x80"}\n]\n')
        with raises_at(f"{path}:3: not UTF-8 text (byte 0x80 at column 13)"):
            read_examples(str(path))

    def test_csv_names_the_line(self, tmp_path):
        path = tmp_path / "d.csv"
        path.write_bytes("prompt,completion\nhi,there\ncafé,x\n".encode("latin-1"))
        with raises_at(f"{path}:3: not UTF-8 text (byte 0xe9 at column 4)"):
            read_examples(str(path))

    def test_utf16_says_so(self, tmp_path):
        path = tmp_path / "d.csv"
        path.write_text("prompt,completion\nhi,there\n", encoding="utf-16")
        with raises_at(f"{path}: the file is UTF-16 text, not UTF-8; save it as UTF-8"):
            read_examples(str(path))

    def test_gzipped_jsonl_names_the_line(self, tmp_path):
        path = tmp_path / "d.jsonl.gz"
        path.write_bytes(gzip.compress(b'{"text": "a"}\n{"text": "\xff"}\n'))
        with raises_at(f"{path}:2: not UTF-8 text"):
            read_examples(str(path))


# --------------------------------------------------------------------------- 2. JSON the parser refuses


class TestJsonLimits:
    def test_deeply_nested_jsonl_line(self, tmp_path):
        path = tmp_path / "d.jsonl"
        path.write_text(jsonl([{"text": "a"}]) + "[" * 100_000 + "\n")
        with raises_at(f"{path}:2: invalid JSON (nested too deeply for Python's JSON parser)") as exc:
            read_examples(str(path))
        one_line(exc)

    def test_deeply_nested_json_document(self, tmp_path):
        path = tmp_path / "d.json"
        path.write_text('{"data": [' + "[" * 100_000 + "]}")
        with raises_at(f"{path}: invalid JSON (nested too deeply"):
            read_examples(str(path))

    def test_deeply_nested_messages_cell(self, tmp_path):
        path = tmp_path / "d.csv"
        path.write_text("messages\n" + "[" * 100_000 + "\n")
        with raises_at(f"{path}:2: `messages` is not valid JSON (nested too deeply"):
            read_examples(str(path))

    def test_integer_past_the_digit_limit(self, tmp_path):
        path = tmp_path / "d.jsonl"
        path.write_text('{"text": "a", "id": ' + "9" * 5000 + "}\n")
        with raises_at(f"{path}:1: invalid JSON (Exceeds the limit"):
            read_examples(str(path))


# --------------------------------------------------------------------------- 3. long CSV cells


@pytest.fixture()
def csv_limit():
    """Restore csv's process-wide cell limit after a test that lowers it."""
    before = csv.field_size_limit()
    yield
    csv.field_size_limit(before)


class TestLongCsvCell:
    def test_a_cell_over_128_kib_is_read(self, tmp_path):
        path = tmp_path / "d.csv"
        long = "word " * 60_000  # 300 KB, over csv's default 131072
        path.write_text(f"prompt,completion\nq,a\n\"{long}\",b\n", encoding="utf-8")
        examples = read_examples(str(path))
        assert [(len(e.prompt), e.where) for e in examples] == [(1, f"{path}:2"), (len(long), f"{path}:3")]

    def test_a_cell_over_the_bound_names_the_line(self, tmp_path, monkeypatch, csv_limit):
        monkeypatch.setattr(formats, "CSV_FIELD_LIMIT", 1000)
        csv.field_size_limit(1000)
        path = tmp_path / "d.csv"
        path.write_text("text\nshort\n\n\"" + "x" * 2000 + "\n\"\n", encoding="utf-8")
        with raises_at(f"{path}:4: malformed CSV (field larger than field limit (1000))"):
            read_examples(str(path))


# --------------------------------------------------------------------------- 4. valid JSON, wrong shape


class TestShapeMessages:
    @pytest.mark.parametrize(("row", "message"), [
        ({"messages": "hello"}, "`messages` must be a non-empty list of {role, content} turns, got a string ('hello')"),
        ({"messages": {"role": "user", "content": "q"}},
         "`messages` must be a non-empty list of {role, content} turns, got an object"),
        ({"messages": []}, "`messages` must be a non-empty list of {role, content} turns, got an empty list"),
        ({"messages": None}, "`messages` must be a non-empty list of {role, content} turns, got null"),
        ({"messages": 3}, "`messages` must be a non-empty list of {role, content} turns, got a number"),
        ({"conversations": "hi"}, "`conversations` must be a non-empty list of {role, content} turns, got a string"),
        ({"messages": ["hello"]}, "messages[0] must be an object with `role` and `content`, got a string ('hello')"),
        ({"messages": [{"content": "q"}]},
         "messages[0] has role None (no `role` field); expected one of ['system', 'user', 'assistant', 'tool']"),
        ({"messages": [{"role": ["user"], "content": "q"}]}, "messages[0] has role ['user']; expected one of"),
        ({"messages": [{"role": "user"}]}, "`messages[0].content` must be a string, got NoneType (no `content` field)"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "`messages[0].content` must be a string, got list"),
        ({"prompt": 1, "completion": "a"}, "`prompt` must be a string, got int"),
        ({"prompt": "q", "completion": ["a"]},
         ("`completion` must be a string, got list; give both as lists of messages (TRL's conversational format) "
          "or both as strings")),
        ({"prompt": CHAT[:1], "completion": "a"}, "`prompt` is a list of messages but `completion` is a str"),
    ])
    def test_says_what_is_wrong_at_file_and_line(self, tmp_path, row, message):
        path = tmp_path / "d.jsonl"
        path.write_text(jsonl([{"messages": CHAT}, row]))
        with raises_at(f"{path}:2: {message}") as exc:
            read_examples(str(path))
        one_line(exc)

    def test_csv_messages_cell_that_is_not_a_list(self, tmp_path):
        path = tmp_path / "d.csv"
        path.write_text("messages\nhello\n")
        with raises_at(f"{path}:2: `messages` must be a non-empty list of {{role, content}} turns, got a string ('hello')"):
            read_examples(str(path))

    def test_long_string_is_previewed_not_dumped(self, tmp_path):
        path = tmp_path / "d.jsonl"
        path.write_text(jsonl([{"messages": "x" * 10_000}]))
        with raises_at(f"{path}:1: `messages` must be a non-empty list", r".*got a string \('x{30}'\.\.\.\)$"):
            read_examples(str(path))


# --------------------------------------------------------------------------- 5. repeated rows


class TestRepeats:
    def test_warns_with_count_and_first_repeat_and_keeps_them(self, tmp_path, caplog):
        path = tmp_path / "d.jsonl"
        rows = [{"text": "a"}, {"text": "b"}, {"text": "a"}, {"text": "c"}, {"text": "b"}, {"text": "a"}]
        path.write_text(jsonl(rows))
        with caplog.at_level(logging.WARNING, logger="tunescout.data.formats"):
            examples = read_examples(str(path))
        assert len(examples) == 6
        assert [r.getMessage() for r in caplog.records] == [
            f"{path}: 3 rows repeat an earlier row (first {path}:3, a repeat of {path}:1); they are kept"]
        assert caplog.records[0].name == "tunescout.data.formats"

    def test_rows_compare_by_what_trains(self, tmp_path, caplog):
        path = tmp_path / "d.jsonl"
        path.write_text(jsonl([{"id": 1, "messages": CHAT}, {"id": 2, "messages": CHAT},
                               {"prompt": "q", "completion": "a"}, {"text": "q"}]))
        with caplog.at_level(logging.WARNING, logger="tunescout.data.formats"):
            read_examples(str(path))
        assert [r.getMessage() for r in caplog.records] == [
            f"{path}: 1 row repeats an earlier row (first {path}:2, a repeat of {path}:1); they are kept"]

    def test_no_warning_without_repeats(self, tmp_path, caplog):
        path = tmp_path / "d.jsonl"
        path.write_text(jsonl([{"text": "a"}, {"text": "b"}, {"prompt": "a", "completion": "b"}]))
        with caplog.at_level(logging.WARNING, logger="tunescout.data.formats"):
            read_examples(str(path))
        assert caplog.records == []


# --------------------------------------------------------------------------- 6. JSON Lines in .json, gzip, globs


class TestJsonLinesInJson:
    def test_read_as_json_lines_with_line_errors(self, tmp_path):
        path = tmp_path / "d.json"
        path.write_text('{"text": "a"}\n\n{"text": "b"}\n')
        assert [(e.text, e.where) for e in read_examples(str(path))] == [("a", f"{path}:1"), ("b", f"{path}:3")]
        path.write_text('{"text": "a"}\n{"text": "b"}\n{"text": \n')
        with raises_at(f"{path}:3: invalid JSON (Expecting value at column"):
            read_examples(str(path))
        path.write_text('{"text": "a"}\n{"prompt": "b"}\n')
        with raises_at(f"{path}:2: has `prompt` but no `completion`"):
            read_examples(str(path))

    def test_one_document_with_junk_after_keeps_its_error(self, tmp_path):
        path = tmp_path / "d.json"
        path.write_text('{\n  "data": [{"text": "a"}]\n}\n{"text": "b"}\n')
        with raises_at(f"{path}:4: invalid JSON (Extra data)"):
            read_examples(str(path))


class TestGzip:
    @pytest.mark.parametrize(("name", "content", "where"), [
        ("d.jsonl.gz", jsonl([{"text": "a"}, {"text": "b"}]), ":1"),
        ("d.json.gz", json.dumps([{"text": "a"}, {"text": "b"}]), "[row 0]"),
        ("d.JSON.GZ", jsonl([{"text": "a"}, {"text": "b"}]), ":1"),
        ("d.csv.gz", "text\na\nb\n", ":2"),
    ])
    def test_read_transparently(self, tmp_path, name, content, where):
        path = tmp_path / name
        path.write_bytes(gzip.compress(content.encode()))
        examples = read_examples(str(path))
        assert [e.text for e in examples] == ["a", "b"] and examples[0].where == f"{path}{where}"

    def test_errors_keep_file_and_line(self, tmp_path):
        path = tmp_path / "d.csv.gz"
        path.write_bytes(gzip.compress(b"prompt,completion\na,b\nc,d,e\n"))
        with raises_at(f"{path}:3: row has 3 cells but the header has 2 columns"):
            read_examples(str(path))

    @pytest.mark.parametrize("data", [b"not gzip at all", gzip.compress(jsonl([{"text": "a"}] * 50).encode())[:40]],
                             ids=["not-gzip", "truncated"])
    def test_corrupt_or_truncated(self, tmp_path, data):
        path = tmp_path / "d.jsonl.gz"
        path.write_bytes(data)
        with raises_at(f"{path}: not a readable gzip file ("):
            read_examples(str(path))

    @pytest.mark.parametrize(("name", "shown"), [("d.parquet.gz", ".parquet.gz"), ("d.txt.gz", ".txt.gz"), ("d.gz", ".gz")])
    def test_unsupported(self, tmp_path, name, shown):
        path = tmp_path / name
        path.write_bytes(gzip.compress(b"x"))
        with raises_at(f"{path}: unsupported file type {shown!r} (use .jsonl, .json, .csv, .parquet); "
                       ".jsonl, .json, .csv may be gzipped (.gz)"):
            read_examples(str(path))


class TestGlob:
    def parts(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "part-1.jsonl").write_text(jsonl([{"text": "b"}]))
        (folder / "part-0.jsonl").write_text(jsonl([{"text": "a"}]))
        (folder / "part-2.csv.gz").write_bytes(gzip.compress(b"text\nc\n"))
        (folder / "notes.md").write_text("not data")
        return folder

    def test_sorted_each_file_with_its_own_lines(self, tmp_path):
        folder = self.parts(tmp_path / "data")
        examples = read_examples(str(folder / "part-*"))
        assert [(e.text, e.where) for e in examples] == [
            ("a", f"{folder}/part-0.jsonl:1"), ("b", f"{folder}/part-1.jsonl:1"), ("c", f"{folder}/part-2.csv.gz:2")]

    def test_error_names_the_matched_file(self, tmp_path):
        folder = self.parts(tmp_path / "data")
        (folder / "part-1.jsonl").write_text(jsonl([{"text": "b"}, {"prompt": "x"}]))
        with raises_at(f"{folder}/part-1.jsonl:2: has `prompt` but no `completion`"):
            read_examples(str(folder / "part-*"))

    def test_recursive_and_unsupported_match(self, tmp_path):
        folder = self.parts(tmp_path / "data" / "deep")
        assert len(read_examples(str(tmp_path / "data" / "**" / "*.jsonl"))) == 2
        with raises_at(f"{folder}/notes.md: unsupported file type '.md'"):
            read_examples(str(folder / "*"))

    def test_nothing_matches(self, tmp_path):
        pattern = str(tmp_path / "data" / "part-*.jsonl")
        with raises_at(f"{pattern}: no files match this pattern"):
            read_examples(pattern)
        with raises_at(f"{pattern}: no files match this pattern"):  # never sent to the hub
            read_examples(pattern, hub=True)

    def test_an_existing_name_with_glob_characters_is_a_file(self, tmp_path):
        path = tmp_path / "d[1].jsonl"
        path.write_text(jsonl([{"text": "a"}]))
        assert [e.where for e in read_examples(str(path))] == [f"{path}:1"]

    def test_digest_covers_every_matched_file(self, tmp_path, monkeypatch):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        monkeypatch.setattr(digest, "_MEMO", {})
        folder = self.parts(tmp_path / "a" / "data")
        first = digest.file_digest(str(folder / "part-*"))
        assert first.startswith("sha256:")
        moved = self.parts(tmp_path / "b" / "data")  # the same files elsewhere: the same digest
        assert digest.file_digest(str(moved / "part-*")) == first
        monkeypatch.chdir(tmp_path / "a")
        assert digest.file_digest("data/part-*") == first
        seen = {first}
        (folder / "part-1.jsonl").write_text(jsonl([{"text": "B"}]))  # a part edited
        seen.add(digest.file_digest(str(folder / "part-*")))
        (folder / "part-3.jsonl").write_text(jsonl([{"text": "d"}]))  # a part added
        seen.add(digest.file_digest(str(folder / "part-*")))
        (folder / "part-3.jsonl").rename(folder / "part-4.jsonl")  # a part renamed
        seen.add(digest.file_digest(str(folder / "part-*")))
        assert len(seen) == 4
        with pytest.raises(FileNotFoundError, match="no data files match"):
            digest.file_digest(str(folder / "none-*"))


# --------------------------------------------------------------------------- other unreadable files


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "d.jsonl"
    path.write_text(jsonl([{"text": "a"}]))

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", denied)
    with raises_at(f"{path}: cannot read the file (Permission denied)"):
        read_examples(str(path))


def test_folder_of_files_suggests_a_glob(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.jsonl").write_text(jsonl([{"text": "a"}]))
    with raises_at(f"{folder}: a folder not saved by `datasets.save_to_disk`; for a folder of data files give a glob, "
                   f"such as {folder}/*.jsonl"):
        read_examples(str(folder))
    assert [e.text for e in read_examples(str(folder / "*.jsonl"))] == ["a"]


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with raises_at(f"{path}: not a readable Parquet file ("):
        read_examples(str(path))
