"""benchmarks/reference/make_tasks.py writes the committed data again, byte for byte: the reference
suite's store is only as good as the rows behind it, and a generator that drifts (Faker draws dates
back from today) would give a clone data that no trial of the store was trained on."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "reference" / "data"
SCRIPT = DATA.parent / "make_tasks.py"


@pytest.fixture(scope="module")
def make_tasks(load_script):
    return load_script(SCRIPT, "make_tasks")


def test_the_script_writes_the_committed_rows(make_tasks, tmp_path: Path) -> None:
    written = make_tasks.write_all(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in DATA.glob("*.jsonl"))
    for path in written:
        assert path.read_bytes() == (DATA / path.name).read_bytes(), f"{path.name} differs from the committed file"


def test_no_held_out_row_is_also_a_training_row(make_tasks) -> None:
    for task in make_tasks.TASKS:
        parts = dict(make_tasks.splits(task))
        train = {str(r["messages"][1]) for r in parts["train"]}
        assert not [r for r in parts["eval"] if str(r["messages"][1]) in train], task.name
        assert (len(parts["train"]), len(parts["eval"])) == (task.n_train, task.n_eval)
