"""A study: models × methods × datasets × HP grid × seeds, expanded into trials with stable ids.

A trial's id hashes everything that can change its result: the study it belongs to, its
dataset's name and task settings (metric, generation length, eval limit), and the run identity
of its fully resolved training config (every ``fixed`` and grid setting, model, method, seed,
data settings, and the content digest of each data file; see :mod:`tunescout.train.identity`
for the few keys left out). So the same spec always gives the same ids, adding a grid value
only adds trials, and changing ``epochs`` or regenerating a training file gives new trials
instead of reporting old results under new settings.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunescout.config import ConfigError, TrainConfig, build_config, read_yaml_mapping
from tunescout.settings import did_you_mean, flatten_dotted, nest_dotted, resolve_beside
from tunescout.study.executors.base import ExecutorOptions
from tunescout.stopping.policies import Stopping, build_stopping
from tunescout.study.keys import COHORT, DEFAULT_METRIC, dataset_metric
from tunescout.train.identity import config_hash, run_identity

__all__ = ["BUDGET_KEYS", "COHORT", "DATASET_KEYS", "DEFAULT_METRIC", "LORA_ONLY", "STUDY_KEYS", "DatasetSpec",
           "StudySpec", "Trial", "dataset_metric", "expand_trials", "load_study", "trial_config", "validate"]

LORA_ONLY = ("lora.",)
BUDGET_KEYS = ("tokens", "wall_s")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of a study: training file, held-out file and the task metric."""

    name: str
    train: str | list[dict[str, Any]]
    """A training file, or several as ``{path, phase, epochs}`` entries (a train config's ``data``),
    e.g. two tasks as two phases, for a grid over ``strategy: [stacked, phased]``."""
    eval: str
    metric: str = DEFAULT_METRIC
    """Task metric computed on ``eval`` by generation (accuracy, exact_match, f1, rougeL), or val_loss."""
    task_type: str | None = None
    max_new_tokens: int = 32
    eval_limit: int | None = 200
    """Evaluate the task metric on at most this many eval rows (generation is the slow part)."""

    def __post_init__(self) -> None:
        _check_eval_sizes(vars(self), f"dataset {self.name!r}")  # built in code too (`tune`), not only from YAML


def _check_eval_sizes(raw: dict[str, Any], at: str) -> None:
    """``max_new_tokens`` a positive integer, ``eval_limit`` one or null (every row)."""
    for key, optional in (("max_new_tokens", False), ("eval_limit", True)):
        value = raw.get(key)
        if key in raw and not (optional and value is None) and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{at}.{key}: expected a positive integer{' or null' if optional else ''}, "
                              f"got {value!r}")


@dataclass
class StudySpec:
    """A study as its YAML gives it (see :func:`load_study`), paths resolved."""

    name: str
    models: list[str]
    datasets: list[DatasetSpec]
    methods: list[str] = field(default_factory=lambda: ["full"])
    grid: dict[str, list[Any]] = field(default_factory=dict)
    configs: list[dict[str, Any]] = field(default_factory=list)
    """Explicit configurations (train settings, nested or dotted) to try instead of a ``grid``
    product: the top-k of a ranking, or presets."""
    fixed: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    stopping: dict[str, Any] = field(default_factory=lambda: {"rule": "none"})
    budget: dict[str, float] = field(default_factory=dict)
    """``tokens`` (trained so far, all trials) and/or ``wall_s`` (study time) to stop launching at."""
    store: str = ""
    runs_dir: str = ""
    """Where trial run directories (and their checkpoints) go: the YAML's ``storage`` (or its older
    name ``runs_dir``); default ``<store>.runs`` next to the store. On a cluster, a path every
    node sees, so that a trial retried on another node resumes from its checkpoint."""
    executor: ExecutorOptions | dict[str, Any] = field(default_factory=ExecutorOptions)
    """What runs the trials: ``{name: local | ray, address, workers, gpus_per_trial,
    cpus_per_trial, max_retries}`` in YAML, typed (:class:`ExecutorOptions`) once the study is loaded."""

    @functools.cached_property
    def early_stopping(self) -> Stopping:
        """``stopping`` built into its rule and policy, once (checked when the study loads); the
        mapping stays for the store and the labels."""
        return build_stopping(self.stopping)

    @property
    def data_cache(self) -> Path | None:
        """Where the driver keeps the data it tokenised, for the trials to read back
        (:mod:`tunescout.data.cache`): in the storage every trial already reaches."""
        return Path(self.runs_dir) / ".data-cache" if self.runs_dir else None


@dataclass(frozen=True)
class Trial:
    """One run of a study: a model, method, dataset, grid point (``hparams``, dotted keys) and seed."""

    trial_id: str
    model: str
    method: str
    dataset: str
    hparams: dict[str, Any]
    seed: int

    @property
    def cohort(self) -> tuple[str, ...]:
        """The trial's :data:`COHORT` key."""
        return tuple(getattr(self, k) for k in COHORT)


STUDY_KEYS = ("name", "store", "storage", "runs_dir", "models", "methods", "datasets", "grid", "configs", "fixed",
              "seeds", "stopping", "budget", "executor")
DATASET_KEYS = ("name", "train", "eval", "metric", "task_type", "max_new_tokens", "eval_limit")


def _check_keys(raw: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key `{key}`{did_you_mean(str(key), allowed)}")


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A study's name: it names the store file and the trials' run folders, so never a path."""


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise ConfigError(f"{where}: `name` must be a string of letters, digits, '.', '_' or '-' (at most 128, "
                          f"starting with a letter or digit, no '..'), got {name!r}: it names the store file "
                          f"and run folders, so it may not be a path")
    return name


def _expect(raw: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    """``raw[key]`` if it is a ``kind`` (a YAML list or mapping), else a ConfigError naming the key:
    a string where a list belongs would otherwise be iterated character by character."""
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind):
        shape = "a list" if kind is list else "a mapping"
        raise ConfigError(f"{where}: `{key}` must be {shape}, got {type(value).__name__} {value!r}")
    return value


def _dataset_spec(raw: Any, i: int, base: Path, where: str) -> DatasetSpec:
    """One ``datasets`` entry, every field type-checked (the eval settings are used only after a
    trial has trained, so a bad one must fail here, before any trial launches)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: datasets[{i}] must be a mapping with `name`, `train` and `eval`")
    at = f"{where}: datasets[{i}]"
    _check_keys(raw, DATASET_KEYS, at)
    if not all(k in raw for k in ("name", "train", "eval")):
        raise ConfigError(f"{at} needs `name`, `train` and `eval`")
    for key in ("name", "eval"):
        if not isinstance(raw[key], str) or not raw[key]:
            raise ConfigError(f"{at}.{key}: expected a non-empty string, got {raw[key]!r}")
    train = _train_entries(raw["train"], f"{at}.train", base)
    if raw.get("task_type") is not None and not isinstance(raw["task_type"], str):
        raise ConfigError(f"{at}.task_type: expected a string, got {raw['task_type']!r}")
    _check_eval_sizes(raw, at)
    return DatasetSpec(**{**raw, "train": train, "eval": resolve_beside(raw["eval"], base)})


def _train_entries(value: Any, at: str, base: Path) -> str | list[dict[str, Any]]:
    """A dataset's ``train``: a path, or a non-empty list of data entries (``path`` and optionally
    ``phase`` and ``epochs``), paths resolved against the study's folder."""
    if isinstance(value, str) and value:
        return resolve_beside(value, base)
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{at}: expected a path or a list of {{path, phase}} entries, got {value!r}")
    entries = []
    for j, entry in enumerate(value):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"]:
            raise ConfigError(f"{at}[{j}]: expected a mapping with a `path`, got {entry!r}")
        _check_keys(entry, ("path", "phase", "epochs"), f"{at}[{j}]")
        entries.append({**entry, "path": resolve_beside(entry["path"], base)})
    return entries


def load_study(path: str | Path) -> StudySpec:
    """Load and validate a study YAML (relative paths resolve against its folder).

    Raises:
        ConfigError: unknown keys, missing fields, or a grid/fixed key that is not a train setting.
    """
    path = Path(path)
    raw = read_yaml_mapping(path, "study")
    _check_keys(raw, STUDY_KEYS, str(path))
    base = path.resolve().parent
    where = str(path)
    for key in ("name", "models", "datasets"):
        if raw.get(key) is None or raw.get(key) == [] or raw.get(key) == "":
            raise ConfigError(f"{path}: `{key}` is required")
    name = _check_name(raw["name"], where)
    models = _expect(raw, "models", list, [], where)
    if not models or not all(isinstance(m, str) and m for m in models):
        raise ConfigError(f"{path}: `models` must be a non-empty list of model paths or names, got {models!r}")
    methods = _expect(raw, "methods", list, ["full"], where)
    if not methods:
        raise ConfigError(f"{path}: `methods` is empty; give at least one of ['full', 'lora']")
    store = raw.get("store", f"{name}.db")
    if not isinstance(store, str) or not store:
        raise ConfigError(f"{path}: `store` must be a file path, got {store!r}")
    spec = StudySpec(
        name=name, models=[resolve_beside(m, base) for m in models],
        datasets=[_dataset_spec(d, i, base, where) for i, d in enumerate(_expect(raw, "datasets", list, [], where))],
        methods=methods, grid=_expect(raw, "grid", dict, {}, where), configs=_expect(raw, "configs", list, [], where),
        fixed=_expect(raw, "fixed", dict, {}, where), seeds=raw.get("seeds", [0]),
        stopping=raw.get("stopping") or {"rule": "none"}, budget=raw.get("budget") or {},
        store=str(base / store), executor=_expect(raw, "executor", dict, {}, where),
    )
    if raw.get("storage") and raw.get("runs_dir"):
        raise ConfigError(f"{path}: `storage` and `runs_dir` name the same folder; give one")
    runs = raw.get("storage") or raw.get("runs_dir")
    spec.runs_dir = str(base / os.path.expanduser(str(runs))) if runs else spec.store + ".runs"
    validate(spec)
    return spec


def validate(spec: StudySpec) -> None:
    """Check the whole study before any data is tokenised: its keys and types, the stopping rule,
    and that every trial's config builds (so a typo fails before hours of training)."""
    from tunescout.study.executors import validate_executor

    if not isinstance(spec.budget, dict):
        raise ConfigError(f"budget: expected a mapping such as {{tokens: 1.0e+9}}, got {spec.budget!r}")
    _check_keys(spec.budget, BUDGET_KEYS, "budget")
    for key, value in spec.budget.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ConfigError(f"budget.{key}: expected a positive number, got {value!r}")
    if not isinstance(spec.seeds, list) or not spec.seeds or \
            not all(isinstance(s, int) and not isinstance(s, bool) for s in spec.seeds):
        raise ConfigError(f"seeds: expected a non-empty list of integers, got {spec.seeds!r}")
    if not isinstance(spec.stopping, dict):
        raise ConfigError(f"stopping: expected a mapping such as {{rule: dynamics}}, got {spec.stopping!r}")
    spec.early_stopping  # noqa: B018 - built here, so a bad rule fails at load
    try:
        spec.executor = validate_executor(spec.executor)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    names = [d.name for d in spec.datasets]
    if len(set(names)) != len(names):
        raise ConfigError(f"dataset names must be unique: {names}")
    for d in spec.datasets:  # a misspelt metric, or harness tasks without lm-eval, fail before any trial trains
        _check_metric(d)
    for key, values in spec.grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{key}: expected a non-empty list of values")
    if not isinstance(spec.configs, list) or not all(isinstance(c, dict) for c in spec.configs):
        raise ConfigError(f"configs: expected a list of mappings of train settings, got {spec.configs!r}")
    if spec.configs and spec.grid:
        raise ConfigError("a study takes a `grid` or a list of `configs`, not both")
    _check_name(spec.name, "study")
    if not isinstance(spec.methods, list) or not spec.methods:
        raise ConfigError(f"methods: expected a non-empty list of ['full', 'lora'], got {spec.methods!r}")
    for method in spec.methods:
        if method not in ("full", "lora"):
            raise ConfigError(f"methods: {method!r} is not one of ['full', 'lora']")
    for trial in expand_trials(spec):
        trial_config(spec, trial)
        break
    for key in spec.grid:  # each grid key must be a valid train setting on its own
        trial_config(spec, Trial("check", spec.models[0], "lora", spec.datasets[0].name,
                                 {key: spec.grid[key][0]}, spec.seeds[0]))


def _check_metric(dataset: DatasetSpec) -> None:
    from tunescout.evaluate.harness import HARNESS_INSTALL, harness_available
    from tunescout.evaluate.metrics import get_metric

    name = dataset_metric(dataset)  # raises ConfigError naming the dataset for a bad harness mapping
    if name.startswith("harness:") and not harness_available():
        raise ConfigError(f"dataset {dataset.name!r}: harness tasks need lm-evaluation-harness: {HARNESS_INSTALL}")
    try:
        get_metric(name)
    except ValueError as exc:
        raise ConfigError(f"dataset {dataset.name!r}: {exc}") from None


def _dataset(spec: StudySpec, name: str) -> DatasetSpec:
    return next(d for d in spec.datasets if d.name == name)


def _build_trial_config(spec: StudySpec, model: str, method: str, dataset: DatasetSpec, hparams: dict[str, Any],
                        seed: int, output_dir: str) -> TrainConfig:
    raw = nest_dotted({**spec.fixed, **hparams})
    data = [{"path": dataset.train}] if isinstance(dataset.train, str) else [dict(d) for d in dataset.train]
    raw.update(model=model, method=method, seed=seed, data=data,
               eval_data=[{"path": dataset.eval}], output_dir=output_dir, progress=False)
    raw.setdefault("checkpoint_every", 20)
    if raw.get("track"):  # each trial is one tracker run, grouped by study (MLflow experiment, W&B group)
        raw.setdefault("track_group", spec.name)
    return build_config(raw)


def _trial_id(spec: StudySpec, dataset: DatasetSpec, config: TrainConfig) -> str:
    """``t`` + a hash of the study, the dataset's task settings and the config's run identity."""
    task = {k: v for k, v in dataclasses.asdict(dataset).items() if k not in ("train", "eval", "task_type")}
    return "t" + config_hash({"study": spec.name, "task": task, "run": run_identity(config)})[:12]


def expand_trials(spec: StudySpec) -> list[Trial]:
    """Every model × method × dataset × grid point (or listed config) × seed, LoRA-only keys
    dropped for full FT.

    Raises:
        ConfigError: a trial's config does not build.
        FileNotFoundError: a dataset's train or eval file does not exist.
    """
    keys = sorted(spec.grid)
    points = ([flatten_dotted(c) for c in spec.configs] if spec.configs else
              [dict(zip(keys, values)) for values in itertools.product(*(spec.grid[k] for k in keys))])
    trials: dict[str, Trial] = {}
    for model, method, dataset, seed in itertools.product(spec.models, spec.methods, spec.datasets, spec.seeds):
        for point in points:
            hp = {k: v for k, v in sorted(point.items()) if method == "lora" or not k.startswith(LORA_ONLY)}
            try:
                config = _build_trial_config(spec, model, method, dataset, hp, seed, output_dir="")
            except ConfigError as exc:
                raise ConfigError(f"study {spec.name}, {method} on {dataset.name} with {hp}: {exc}") from None
            tid = _trial_id(spec, dataset, config)
            trials.setdefault(tid, Trial(tid, model, method, dataset.name, hp, seed))
    return list(trials.values())


def trial_config(spec: StudySpec, trial: Trial) -> TrainConfig:
    """The TrainConfig of one trial: fixed settings, then its grid point, then its identity."""
    try:
        return _build_trial_config(spec, trial.model, trial.method, _dataset(spec, trial.dataset), trial.hparams,
                                   trial.seed, output_dir=str(Path(spec.runs_dir) / trial.trial_id))
    except ConfigError as exc:
        raise ConfigError(f"study {spec.name}, trial {trial.trial_id}: {exc}") from None
