"""A harness task defined locally: a multiple-choice YAML over a JSON file, for tests that must not
touch the network (``dataset_path: json`` with ``data_files`` loads it with ``datasets`` from disk)."""

from __future__ import annotations

import json
from pathlib import Path

DOCS = [
    {"question": "What colour is the sky?", "choices": ["blue", "green", "red"], "label": 0},
    {"question": "What is two plus two?", "choices": ["three", "four"], "label": 1},
    {"question": "Which one is an animal?", "choices": ["stone", "cat", "river"], "label": 1},
    {"question": "Where does the sun rise?", "choices": ["east", "west"], "label": 0},
    {"question": "Which is a number?", "choices": ["seven", "apple", "door", "road"], "label": 0},
    {"question": "What do we read?", "choices": ["books", "boats"], "label": 0},
]


def write_mc_task(folder: Path, name: str = "tiny_mc") -> Path:
    """A harness task YAML over a local JSON file: ``dataset_path: json`` with ``data_files``, so
    the harness loads it with ``datasets`` from disk and downloads nothing."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.json"
    data.write_text(json.dumps(DOCS))
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{label}}"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    return folder
