"""Tests for tunescout.data.formats: every input format, every row shape, and error messages."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from tunescout.data.formats import DataError, Example, normalise_row, read_examples

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 plus 3?"},
    {"role": "assistant", "content": "5"},
]
CHAT_TUPLE = tuple(CHAT)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def raises_at(where: str, rest: str = ""):
    """pytest.raises(DataError) whose message starts with ``where`` (escaped) then ``rest`` (regex)."""
    return pytest.raises(DataError, match="^" + re.escape(where) + rest)


# --------------------------------------------------------------------------- row shapes


class TestNormaliseRow:
    def test_messages(self):
        ex = normalise_row({"messages": CHAT}, "f:1")
        assert ex == Example("messages", messages=CHAT_TUPLE, where="f:1")

    def test_messages_drop_extra_keys(self):
        row = {"messages": [{"role": "user", "content": "hi", "name": "bob"}]}
        ex = normalise_row(row, "f:1")
        assert ex.messages == ({"role": "user", "content": "hi"},)

    def test_sharegpt_conversations_human_gpt(self):
        row = {"conversations": [
            {"from": "system", "value": "sys"},
            {"from": "human", "value": "hi"},
            {"from": "gpt", "value": "hello"},
        ]}
        ex = normalise_row(row, "f:1")
        assert ex.kind == "messages"
        assert ex.messages == (
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
        )

    def test_sharegpt_keys_under_messages(self):
        row = {"messages": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
        assert normalise_row(row, "w").messages == ({"role": "user", "content": "q"}, {"role": "assistant", "content": "a"})

    def test_tool_role_accepted(self):
        row = {"messages": [{"role": "tool", "content": "{}"}]}
        assert normalise_row(row, "w").messages[0]["role"] == "tool"

    def test_messages_as_json_text(self):
        ex = normalise_row({"messages": json.dumps(CHAT)}, "w")
        assert ex.messages == CHAT_TUPLE

    def test_prompt_completion(self):
        ex = normalise_row({"prompt": "Q", "completion": " A", "extra": 1}, "f:2")
        assert ex == Example("prompt_completion", prompt="Q", completion=" A", where="f:2")

    def test_alpaca_with_input(self):
        ex = normalise_row({"instruction": "Add", "input": "2 and 3", "output": "5"}, "w")
        assert (ex.kind, ex.prompt, ex.completion) == ("prompt_completion", "Add\n\n2 and 3", "5")

    @pytest.mark.parametrize("row", [
        {"instruction": "Say hi", "input": "", "output": "hi"},
        {"instruction": "Say hi", "output": "hi"},
        {"instruction": "Say hi", "input": None, "output": "hi"},
    ])
    def test_alpaca_without_input(self, row):
        ex = normalise_row(row, "w")
        assert (ex.kind, ex.prompt, ex.completion) == ("prompt_completion", "Say hi", "hi")

    def test_alpaca_text_column_is_ignored(self):
        # tatsu-lab/alpaca carries a pre-rendered `text` column next to the three Alpaca ones.
        ex = normalise_row({"instruction": "I", "input": "", "output": "O", "text": "I O"}, "w")
        assert (ex.kind, ex.prompt, ex.completion, ex.text) == ("prompt_completion", "I", "O", "")

    def test_text(self):
        assert normalise_row({"text": "hello"}, "w") == Example("text", text="hello", where="w")

    def test_example_is_frozen(self):
        ex = normalise_row({"text": "hello"}, "w")
        with pytest.raises(AttributeError):
            ex.text = "other"  # type: ignore[misc]

    # ---- errors

    def test_not_an_object(self):
        with raises_at("w: expected an object, got list"):
            normalise_row([1, 2], "w")

    def test_no_known_field_lists_keys(self):
        with raises_at("w: no `messages`, `prompt`/`completion` or `text` field (keys: answer, question)"):
            normalise_row({"question": "q", "answer": "a"}, "w")

    def test_no_fields_at_all(self):
        with raises_at("w: no `messages`", r".*\(keys: none\)$"):
            normalise_row({}, "w")

    def test_prompt_without_completion(self):
        with raises_at("w: has `prompt` but no `completion`"):
            normalise_row({"prompt": "q"}, "w")

    def test_completion_without_prompt(self):
        with raises_at("w: has `completion` but no `prompt`"):
            normalise_row({"completion": "a"}, "w")

    def test_content_is_a_number(self):
        with raises_at("w: `messages[1].content` must be a string, got int"):
            normalise_row({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 5}]}, "w")

    def test_content_missing(self):
        with raises_at("w: `messages[0].content` must be a string, got NoneType"):
            normalise_row({"messages": [{"role": "user"}]}, "w")

    def test_bad_role(self):
        with raises_at("w: messages[1] has role 'bot'; expected one of ['system', 'user', 'assistant', 'tool']"):
            normalise_row({"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}, "w")

    def test_missing_role(self):
        with raises_at("w: messages[0] has role None"):
            normalise_row({"messages": [{"content": "q"}]}, "w")

    def test_message_not_an_object(self):
        with raises_at("w: messages[0] must be an object"):
            normalise_row({"messages": ["hello"]}, "w")

    @pytest.mark.parametrize("value", [[], "[]", {"role": "user"}, None])
    def test_messages_not_a_nonempty_list(self, value):
        with raises_at("w: `messages` must be a non-empty list"):
            normalise_row({"messages": value}, "w")

    def test_messages_invalid_json_text(self):
        with raises_at("w: `messages` is not valid JSON"):
            normalise_row({"messages": "[{oops"}, "w")

    @pytest.mark.parametrize("row,field", [
        ({"prompt": 1, "completion": "a"}, "prompt"),
        ({"prompt": "q", "completion": ["a"]}, "completion"),
        ({"instruction": 3, "output": "a"}, "instruction"),
        ({"instruction": "i", "input": 7, "output": "a"}, "input"),
        ({"instruction": "i", "output": None}, "output"),
        ({"text": 1.5}, "text"),
    ])
    def test_wrong_types(self, row, field):
        with raises_at(f"w: `{field}` must be a string"):
            normalise_row(row, "w")


# --------------------------------------------------------------------------- JSONL


class TestJsonl:
    def test_all_shapes_with_line_numbers(self, tmp_path):
        path = tmp_path / "d.jsonl"
        path.write_text(
            json.dumps({"messages": CHAT}) + "\n"
            + "\n"  # blank lines are skipped but still counted
            + json.dumps({"prompt": "p", "completion": "c"}) + "\n"
            + "   \n"
            + json.dumps({"instruction": "i", "input": "x", "output": "o"}) + "\n"
            + json.dumps({"text": "t"}),  # no trailing newline
            encoding="utf-8",
        )
        exs = read_examples(str(path))
        assert [e.kind for e in exs] == ["messages", "prompt_completion", "prompt_completion", "text"]
        assert [e.where for e in exs] == [f"{path}:1", f"{path}:3", f"{path}:5", f"{path}:6"]
        assert exs[0].messages == CHAT_TUPLE
        assert (exs[1].prompt, exs[1].completion) == ("p", "c")
        assert (exs[2].prompt, exs[2].completion) == ("i\n\nx", "o")
        assert exs[3].text == "t"

    def test_unicode(self, tmp_path):
        path = tmp_path / "u.jsonl"
        path.write_text(json.dumps({"text": "héllo wörld ✓"}, ensure_ascii=False) + "\n", encoding="utf-8")
        assert read_examples(str(path))[0].text == "héllo wörld ✓"

    def test_uppercase_extension(self, tmp_path):
        path = write_jsonl(tmp_path / "D.JSONL", [{"text": "a"}])
        assert read_examples(str(path))[0].text == "a"

    def test_invalid_json_names_line_3(self, tmp_path):
        path = tmp_path / "bad.jsonl"
        path.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c",\n{"text": "d"}\n', encoding="utf-8")
        with raises_at(f"{path}:3: invalid JSON", r" \(.* at column \d+\)$"):
            read_examples(str(path))

    def test_invalid_json_line_counts_blank_lines(self, tmp_path):
        path = tmp_path / "bad.jsonl"
        path.write_text('{"text": "a"}\n\n\nnot json\n', encoding="utf-8")
        with raises_at(f"{path}:4: invalid JSON"):
            read_examples(str(path))

    def test_missing_fields_names_line(self, tmp_path):
        path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"question": "q"}])
        with raises_at(f"{path}:2: no `messages`, `prompt`/`completion` or `text` field (keys: question)"):
            read_examples(str(path))

    def test_content_number_names_line(self, tmp_path):
        rows = [{"messages": CHAT}, {"messages": CHAT}, {"messages": [{"role": "user", "content": 42}]}]
        path = write_jsonl(tmp_path / "d.jsonl", rows)
        with raises_at(f"{path}:3: `messages[0].content` must be a string, got int"):
            read_examples(str(path))

    def test_bad_role_names_line(self, tmp_path):
        path = write_jsonl(tmp_path / "d.jsonl", [{"messages": [{"role": "narrator", "content": "x"}]}])
        with raises_at(f"{path}:1: messages[0] has role 'narrator'"):
            read_examples(str(path))

    def test_prompt_without_completion_names_line(self, tmp_path):
        path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "completion": "b"}, {"prompt": "a"}])
        with raises_at(f"{path}:2: has `prompt` but no `completion`"):
            read_examples(str(path))

    def test_row_not_an_object_names_line(self, tmp_path):
        path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, ["text", "b"]])
        with raises_at(f"{path}:2: expected an object, got list"):
            read_examples(str(path))

    @pytest.mark.parametrize("content", ["", "\n\n  \n"])
    def test_empty_file(self, tmp_path, content):
        path = tmp_path / "empty.jsonl"
        path.write_text(content, encoding="utf-8")
        with pytest.raises(DataError, match=f"^{re.escape(str(path))}: no rows$"):
            read_examples(str(path))


# --------------------------------------------------------------------------- JSON


class TestJson:
    def test_list(self, tmp_path):
        path = tmp_path / "d.json"
        path.write_text(json.dumps([{"messages": CHAT}, {"prompt": "p", "completion": "c"}, {"text": "t"}]))
        exs = read_examples(str(path))
        assert [e.kind for e in exs] == ["messages", "prompt_completion", "text"]
        assert [e.where for e in exs] == [f"{path}[row 0]", f"{path}[row 1]", f"{path}[row 2]"]
        assert exs[0].messages == CHAT_TUPLE

    def test_data_key(self, tmp_path):
        path = tmp_path / "d.json"
        path.write_text(json.dumps({"version": 1, "data": [{"instruction": "i", "output": "o"}, {"text": "t"}]}))
        exs = read_examples(str(path))
        assert [(e.kind, e.prompt, e.completion, e.text) for e in exs] == [
            ("prompt_completion", "i", "o", ""), ("text", "", "", "t")]

    def test_bad_row_names_row_index(self, tmp_path):
        path = tmp_path / "d.json"
        path.write_text(json.dumps([{"text": "a"}, {"text": "b"}, {"prompt": "c"}]))
        with raises_at(f"{path}[row 2]: has `prompt` but no `completion`"):
            read_examples(str(path))

    def test_bad_row_in_data_key_names_row_index(self, tmp_path):
        path = tmp_path / "d.json"
        path.write_text(json.dumps({"data": [{"text": "a"}, {"messages": [{"role": "user", "content": 1}]}]}))
        with raises_at(f"{path}[row 1]: `messages[0].content` must be a string, got int"):
            read_examples(str(path))

    def test_invalid_json_names_line(self, tmp_path):
        path = tmp_path / "d.json"
        path.write_text('[\n  {"text": "a"},\n  {"text": "b"\n]\n')
        with raises_at(f"{path}:4: invalid JSON"):
            read_examples(str(path))

    def test_jsonl_content_in_json_file(self, tmp_path):
        # Read as JSON Lines, as datasets.load_dataset("json") does (see test_bad_input.py).
        path = tmp_path / "d.json"
        path.write_text('{"text": "a"}\n{"text": "b"}\n')
        assert [(e.text, e.where) for e in read_examples(str(path))] == [("a", f"{path}:1"), ("b", f"{path}:2")]

    @pytest.mark.parametrize("payload", [{"rows": []}, {"data": "x"}, "just a string", 3])
    def test_not_a_list(self, tmp_path, payload):
        path = tmp_path / "d.json"
        path.write_text(json.dumps(payload))
        with raises_at(f"{path}: expected a JSON list of rows"):
            read_examples(str(path))

    def test_empty_list(self, tmp_path):
        path = tmp_path / "d.json"
        path.write_text("[]")
        with pytest.raises(DataError, match=f"^{re.escape(str(path))}: no rows$"):
            read_examples(str(path))

    def test_empty_file(self, tmp_path):
        path = tmp_path / "d.json"
        path.write_text("")
        with raises_at(f"{path}:1: invalid JSON"):
            read_examples(str(path))


# --------------------------------------------------------------------------- CSV


class TestCsv:
    def test_prompt_completion(self, tmp_path):
        path = write_csv(tmp_path / "d.csv", ["prompt", "completion"], [["What, exactly?", " 5"], ["a", "b"]])
        exs = read_examples(str(path))
        assert [(e.kind, e.prompt, e.completion) for e in exs] == [
            ("prompt_completion", "What, exactly?", " 5"), ("prompt_completion", "a", "b")]
        assert [e.where for e in exs] == [f"{path}:2", f"{path}:3"]

    def test_messages_column_holds_json(self, tmp_path):
        path = write_csv(tmp_path / "d.csv", ["id", "messages"], [["1", json.dumps(CHAT)], ["2", json.dumps(CHAT[1:])]])
        exs = read_examples(str(path))
        assert [e.kind for e in exs] == ["messages", "messages"]
        assert exs[0].messages == CHAT_TUPLE
        assert exs[1].messages == CHAT_TUPLE[1:]

    def test_alpaca_and_text(self, tmp_path):
        a = write_csv(tmp_path / "a.csv", ["instruction", "input", "output"], [["Add", "", "x"], ["Add", "1 2", "3"]])
        assert [(e.prompt, e.completion) for e in read_examples(str(a))] == [("Add", "x"), ("Add\n\n1 2", "3")]
        t = write_csv(tmp_path / "t.csv", ["text"], [["line one"], ["line\ntwo"]])
        assert [e.text for e in read_examples(str(t))] == ["line one", "line\ntwo"]

    def test_messages_column_invalid_json_names_line(self, tmp_path):
        path = write_csv(tmp_path / "d.csv", ["messages"], [[json.dumps(CHAT)], ["[{not json"]])
        with raises_at(f"{path}:3: `messages` is not valid JSON"):
            read_examples(str(path))

    def test_messages_column_bad_role_names_line(self, tmp_path):
        path = write_csv(tmp_path / "d.csv", ["messages"], [[json.dumps([{"role": "ai", "content": "x"}])]])
        with raises_at(f"{path}:2: messages[0] has role 'ai'"):
            read_examples(str(path))

    def test_extra_cells_names_line(self, tmp_path):
        path = tmp_path / "d.csv"
        path.write_text("prompt,completion\na,b\nc,d\ne,f,g\n", encoding="utf-8")
        with raises_at(f"{path}:4: row has 3 cells but the header has 2 columns"):
            read_examples(str(path))

    def test_line_numbers_after_multiline_cell(self, tmp_path):
        path = tmp_path / "d.csv"
        path.write_text('prompt,completion\n"two\nlines",b\nc,d\ne,f,g\n', encoding="utf-8")
        with raises_at(f"{path}:5: row has 3 cells but the header has 2 columns"):
            read_examples(str(path))
        path.write_text('prompt,completion\n"two\nlines",b\nc,d\n', encoding="utf-8")
        exs = read_examples(str(path))
        assert [e.where for e in exs] == [f"{path}:2", f"{path}:4"]
        assert exs[0].prompt == "two\nlines"

    def test_missing_column_names_line(self, tmp_path):
        path = tmp_path / "d.csv"
        path.write_text("prompt,completion\na,b\nonly\n", encoding="utf-8")
        with raises_at(f"{path}:3: row has 1 cells but the header has 2 columns"):
            read_examples(str(path))

    def test_wrong_header_names_line(self, tmp_path):
        path = write_csv(tmp_path / "d.csv", ["question", "answer"], [["q", "a"]])
        with raises_at(f"{path}:2: no `messages`, `prompt`/`completion` or `text` field (keys: answer, question)"):
            read_examples(str(path))

    @pytest.mark.parametrize("content", ["", "prompt,completion\n"])
    def test_empty(self, tmp_path, content):
        path = tmp_path / "d.csv"
        path.write_text(content, encoding="utf-8")
        with pytest.raises(DataError, match=f"^{re.escape(str(path))}: no rows$"):
            read_examples(str(path))

    def test_blank_line_before_bad_row(self, tmp_path):
        path = tmp_path / "d.csv"
        path.write_text("prompt,completion\na,b\n\nx,y,z\n", encoding="utf-8")
        with raises_at(f"{path}:4: row has 3 cells but the header has 2 columns"):
            read_examples(str(path))

    def test_utf8_bom(self, tmp_path):
        path = tmp_path / "d.csv"
        path.write_text("prompt,completion\nhi,there\n", encoding="utf-8-sig")
        exs = read_examples(str(path))
        assert [(e.prompt, e.completion) for e in exs] == [("hi", "there")]


# --------------------------------------------------------------------------- Parquet


class TestParquet:
    def write(self, path: Path, rows: list[dict]) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
        return path

    def test_messages(self, tmp_path):
        path = self.write(tmp_path / "d.parquet", [{"messages": CHAT}, {"messages": CHAT[1:]}])
        exs = read_examples(str(path))
        assert [e.messages for e in exs] == [CHAT_TUPLE, CHAT_TUPLE[1:]]
        assert [e.where for e in exs] == [f"{path}[row 0]", f"{path}[row 1]"]

    def test_sharegpt(self, tmp_path):
        conv = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]
        path = self.write(tmp_path / "d.parquet", [{"conversations": conv}])
        assert read_examples(str(path))[0].messages == (
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"})

    def test_prompt_completion_alpaca_text(self, tmp_path):
        pc = self.write(tmp_path / "pc.parquet", [{"prompt": "p", "completion": "c"}])
        al = self.write(tmp_path / "al.parquet", [{"instruction": "i", "input": None, "output": "o"},
                                                   {"instruction": "i", "input": "x", "output": "o"}])
        tx = self.write(tmp_path / "tx.parquet", [{"text": "t"}])
        assert [(e.prompt, e.completion) for e in read_examples(str(pc))] == [("p", "c")]
        assert [(e.prompt, e.completion) for e in read_examples(str(al))] == [("i", "o"), ("i\n\nx", "o")]
        assert [(e.kind, e.text) for e in read_examples(str(tx))] == [("text", "t")]

    def test_bad_row_names_row_index(self, tmp_path):
        path = self.write(tmp_path / "d.parquet", [{"prompt": "a", "completion": "b"}, {"prompt": "a", "completion": None}])
        with raises_at(f"{path}[row 1]: has `prompt` but no `completion`"):
            read_examples(str(path))

    def test_empty_table(self, tmp_path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "d.parquet"
        pq.write_table(pa.table({"text": pa.array([], pa.string())}), path)
        with pytest.raises(DataError, match=f"^{re.escape(str(path))}: no rows$"):
            read_examples(str(path))


# --------------------------------------------------------------------------- datasets folders


class TestDatasetsFolder:
    def test_dataset(self, tmp_path):
        import datasets

        folder = tmp_path / "ds"
        datasets.Dataset.from_list([{"messages": CHAT}, {"messages": CHAT[1:]}]).save_to_disk(str(folder))
        exs = read_examples(str(folder))
        assert [e.messages for e in exs] == [CHAT_TUPLE, CHAT_TUPLE[1:]]
        assert [e.where for e in exs] == [f"{folder}[train row 0]", f"{folder}[train row 1]"]

    def test_dataset_ignores_split(self, tmp_path):
        import datasets

        folder = tmp_path / "ds"
        datasets.Dataset.from_list([{"text": "a"}]).save_to_disk(str(folder))
        exs = read_examples(str(folder), split="validation")
        assert [(e.text, e.where) for e in exs] == [("a", f"{folder}[validation row 0]")]

    def test_dataset_dict_splits(self, tmp_path):
        import datasets

        folder = tmp_path / "dd"
        datasets.DatasetDict({
            "train": datasets.Dataset.from_list([{"prompt": "p1", "completion": "c1"}, {"prompt": "p2", "completion": "c2"}]),
            "test": datasets.Dataset.from_list([{"prompt": "p3", "completion": "c3"}]),
        }).save_to_disk(str(folder))
        train = read_examples(str(folder))
        test = read_examples(str(folder), split="test")
        assert [(e.prompt, e.completion) for e in train] == [("p1", "c1"), ("p2", "c2")]
        assert [(e.prompt, e.completion, e.where) for e in test] == [("p3", "c3", f"{folder}[test row 0]")]

    def test_dataset_dict_missing_split(self, tmp_path):
        import datasets

        folder = tmp_path / "dd"
        datasets.DatasetDict({
            "train": datasets.Dataset.from_list([{"text": "a"}]),
            "test": datasets.Dataset.from_list([{"text": "b"}]),
        }).save_to_disk(str(folder))
        with raises_at(f"{folder}: no split 'validation' (has ['train', 'test'])"):
            read_examples(str(folder), split="validation")

    def test_sharegpt_and_alpaca_in_dataset(self, tmp_path):
        import datasets

        conv = datasets.Dataset.from_list([{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}])
        conv.save_to_disk(str(tmp_path / "conv"))
        alp = datasets.Dataset.from_list([{"instruction": "i", "input": "", "output": "o"}])
        alp.save_to_disk(str(tmp_path / "alp"))
        assert read_examples(str(tmp_path / "conv"))[0].messages == (
            {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"})
        assert [(e.prompt, e.completion) for e in read_examples(str(tmp_path / "alp"))] == [("i", "o")]

    def test_bad_row_names_split_and_row(self, tmp_path):
        import datasets

        folder = tmp_path / "ds"
        datasets.Dataset.from_list([{"messages": [{"role": "user", "content": "x"}]},
                                    {"messages": [{"role": "robot", "content": "y"}]}]).save_to_disk(str(folder))
        with raises_at(f"{folder}[train row 1]: messages[0] has role 'robot'"):
            read_examples(str(folder))


# --------------------------------------------------------------------------- sources


class TestSources:
    def test_unsupported_extension(self, tmp_path):
        path = tmp_path / "d.txt"
        path.write_text("hello\n")
        with raises_at(f"{path}: unsupported file type '.txt' (use .jsonl, .json, .csv, .parquet)"):
            read_examples(str(path))

    def test_no_extension(self, tmp_path):
        path = tmp_path / "data"
        path.write_text("{}")
        with raises_at(f"{path}: unsupported file type ''"):
            read_examples(str(path))

    def test_missing_path_mentions_hub(self, tmp_path):
        path = tmp_path / "nope.jsonl"
        with raises_at(f"{path}: no such file or folder", r".*`hub: true`"):
            read_examples(str(path))

    def test_hub_id_without_hub_flag_is_not_downloaded(self):
        with raises_at("someone/some-dataset: no such file or folder", r".*`hub: true`"):
            read_examples("someone/some-dataset")

    def test_data_error_is_value_error(self):
        assert issubclass(DataError, ValueError)


def test_mixed_shapes_in_one_parquet_file(tmp_path):
    """Columnar files fill unused columns with null; each row is matched on its filled fields."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "mixed.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": "plain", "prompt": None, "completion": None},
                                         {"text": None, "prompt": "p", "completion": "c"}]), path)
    assert [e.kind for e in read_examples(str(path))] == ["text", "prompt_completion"]


# --------------------------------------------------------------------------- TRL conversational rows


class TestConversational:
    P = [{"role": "user", "content": "q"}]
    C = [{"role": "assistant", "content": "a"}]

    def test_prompt_completion_lists_become_a_chat_that_knows_its_completion(self):
        ex = normalise_row({"prompt": self.P, "completion": self.C}, "w")
        assert ex == Example("messages", messages=(*self.P, *self.C), completion_from=1, where="w")

    def test_prompt_only_for_evaluation(self):
        ex = normalise_row({"prompt": self.P}, "w")
        assert (ex.kind, ex.messages, ex.completion_from) == ("messages", tuple(self.P), 1)
        assert normalise_row({"prompt": self.P, "completion": None}, "w").completion_from == 1  # a Parquet gap

    @pytest.mark.parametrize(("row", "message"), [
        ({"prompt": [{"role": "user", "content": "q"}], "completion": "a"},
         r"`prompt` is a list of messages but `completion` is a str; give both as lists"),
        ({"prompt": [], "completion": [{"role": "assistant", "content": "a"}]}, r"`prompt` must be a non-empty list"),
        ({"prompt": [{"role": "user", "content": "q"}], "completion": []}, r"`completion` must be a non-empty list"),
        ({"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "bot", "content": "a"}]},
         r"completion\[0\] has role 'bot'"),
        ({"prompt": [{"role": "user", "content": 3}], "completion": [{"role": "assistant", "content": "a"}]},
         r"`prompt\[0\].content` must be a string"),
        ({"prompt": ["q"]}, r"prompt\[0\] must be an object"),
    ])
    def test_malformed_rows_name_the_file_and_line(self, tmp_path, row, message):
        path = write_jsonl(tmp_path / "trl.jsonl", [{"prompt": self.P, "completion": self.C}, row])
        with raises_at(f"{path}:2: ", message):
            read_examples(str(path))

    def test_eval_items_prompt_with_the_prompt_and_score_the_completion(self):
        from tunescout.evaluate.tasks import build_eval_items

        rows = [normalise_row({"prompt": self.P, "completion": self.C}, "w:1")]
        assert build_eval_items(rows, use_chat=True)[0] == (list(self.P), "a")
        with raises_at("w:2: a prompt-only row has no `completion` to use as the reference answer"):
            build_eval_items([normalise_row({"prompt": self.P}, "w:2")], use_chat=True)
        with raises_at("w:3: `completion` has no assistant message"):
            build_eval_items([normalise_row({"prompt": self.P, "completion": [{"role": "tool", "content": "x"}]},
                                            "w:3")], use_chat=True)
