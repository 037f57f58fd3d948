"""The demo study's files: its YAML (shipped beside this module) and generated datasets."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tunescout.demo.tasks import write_demo_datasets

__all__ = ["DEMO_STUDY", "N_EVAL", "N_TRAIN", "prepare_demo"]

DEMO_STUDY = Path(__file__).with_name("study.yaml")
N_TRAIN = 192
N_EVAL = 32


def prepare_demo(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the demo's datasets and study YAML into ``out_dir``; return the YAML's path."""
    out = Path(out_dir)
    names = [d["name"] for d in yaml.safe_load(DEMO_STUDY.read_text())["datasets"]]
    write_demo_datasets(out / "data", n_train=N_TRAIN, n_eval=N_EVAL, seed=seed, tasks=names)
    study = out / "study.yaml"
    shutil.copyfile(DEMO_STUDY, study)
    return study
