"""Typed configuration for a training run, loaded from YAML plus ``key=value`` overrides.

A YAML file is nothing but saved overrides of the defaults below. Every field is checked
against its type hint when the config is built, so a typo or a wrong type fails before any
model is loaded, with the offending key named (and the closest valid key suggested).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tunescout.settings import (ConfigError, as_number, did_you_mean, merge_nested, nest_dotted, parse_overrides,
                                resolve_beside)

__all__ = [
    "ConfigError",
    "DataSource",
    "LoraConfig",
    "BatchConfig",
    "EvalConfig",
    "NumericsConfig",
    "OptimConfig",
    "OutputConfig",
    "ProcessingConfig",
    "TrainConfig",
    "build_config",
    "load_config",
]

# Short names accepted on the command line and in YAML (``tunescout train run.yaml lr=1e-5``).
ALIASES = {"lr": "learning_rate", "bs": "batch_size"}

ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")
"""The attention implementations tunescout knows how to pack for (:mod:`tunescout.train.stepcost`)."""


@dataclass
class LoraConfig:
    """LoRA adapter settings (used when ``method: lora``)."""

    r: int = 16
    """Rank of the update matrices."""
    alpha: float = 32
    """Scaling numerator: the update is scaled by ``alpha / r``."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    target_modules: str | list[str] = "all-linear"
    """Module names to adapt, or ``all-linear`` (every linear layer except the output head)."""

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ConfigError(f"lora.r must be positive, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class DataSource:
    """One training dataset: a local file/folder, or a hub id when ``hub: true``."""

    path: str
    """JSONL, JSON, CSV or Parquet file (the text ones also gzipped), a glob of such files, a
    folder saved by ``datasets``, or a hub id."""
    phase: int | None = None
    """Phase number for ``strategy: phased`` (ignored when stacked)."""
    epochs: float | None = None
    """Epochs for this dataset's phase (phased only); defaults to the run's ``epochs``."""
    split: str = "train"
    """Split to read from a ``datasets`` folder or hub dataset."""
    hub: bool = False
    """Allow downloading ``path`` from the Hugging Face hub. Off by default: nothing leaves the
    machine unless asked."""


Method = Literal["full", "lora"]
Schedule = Literal["constant", "linear", "cosine"]
Strategy = Literal["stacked", "phased"]
# float16 parses only to be refused in TrainConfig.__post_init__ with the reason (no gradient scaler).
DType = Literal["auto", "float32", "bfloat16", "float16"]
TrainOn = Literal["completion", "all"]
TooLong = Literal["truncate", "drop"]


@dataclass
class ProcessingConfig:
    """How rows become training samples: order of the datasets, length, which tokens carry loss."""

    strategy: Strategy = "stacked"
    """``stacked``: all data in one shuffled stream; ``phased``: phase after phase."""
    max_length: int = 2048
    """Longest sample in tokens (prompt and answer together); see ``too_long`` for longer ones."""
    too_long: TooLong = "truncate"
    """Samples longer than ``max_length``: ``truncate`` keeps the first tokens, ``drop`` skips them."""
    train_on: TrainOn = "completion"
    """``completion``: loss on assistant/completion tokens only; ``all``: on every token."""
    chat_template: str | None = None
    """Jinja chat template overriding the tokenizer's (needed when it has none)."""

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise ConfigError(f"max_length must be >= 2, got {self.max_length}")
        if self.chat_template is not None:
            _check_template(self.chat_template)


@dataclass
class BatchConfig:
    """How many samples make a step, how they are packed, and how long the run is."""

    batch_size: int = 128
    """Effective batch in samples per optimizer step (reached by gradient accumulation)."""
    max_tokens_per_micro_batch: int = 16384
    """Token budget of one packed micro-batch (per device)."""
    max_tokens_per_row: int | None = None
    """Longest packed row. ``null``: one row per micro-batch with flash attention (its
    variable-length kernels make row length free), rows of at most ``max_length`` otherwise
    (SDPA/eager block-diagonal masks cost attention compute quadratic in the row length), with
    the budget cut to about 1,024 tokens on CPU. Setting it keeps both values as given."""
    epochs: float = 1.0
    """Passes over the data (per phase, unless a data entry sets its own); ignored for the length
    when ``max_steps`` or ``max_samples`` is set."""
    max_steps: int | None = None
    """Total optimizer steps, as in Hugging Face's ``TrainingArguments``: overrides ``epochs``,
    cycling through the data (a new shuffle each pass) when it needs more than one pass. Phased
    data repeat the whole curriculum (see ``tunescout/data/phases.py``)."""
    max_samples: int | None = None
    """Total training samples, overriding ``epochs`` and cycling like ``max_steps``; with both
    set, the first reached ends the run."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.epochs <= 0:
            raise ConfigError(f"epochs must be positive, got {self.epochs}")
        _at_least_one(self, "max_steps", "max_samples")


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule."""

    learning_rate: float = 2.0e-5
    """Peak learning rate of AdamW (the recipe's full fine-tuning value; LoRA wants about 10x more)."""
    schedule: Schedule = "constant"
    """Learning-rate shape after warmup: ``constant`` (the recipe found decay often unneeded),
    ``linear`` or ``cosine`` decay to zero at the last step."""
    warmup_steps: int = 0
    """Optimizer steps of linear warmup; step ``i`` (0-based) trains at ``(i + 1) / warmup_steps``
    of the peak, so no step is spent at zero (transformers' schedules reach the same factors one
    step later: their first step has a learning rate of 0)."""
    warmup_ratio: float | None = None
    """Warmup as a fraction of the run's total optimizer steps (transformers' name):
    ``ceil(warmup_ratio * total_steps)`` steps, as transformers rounds it, computed once the
    schedule is built (:meth:`warmup_for`). Exclusive with a non-zero ``warmup_steps``."""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay, applied to weight matrices only (not biases or norms)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW's moment decay rates (beta1, beta2); 0.95 is the recipe's and most LLM trainers' beta2."""
    eps: float = 1.0e-8
    """AdamW's denominator epsilon."""
    grad_clip: float | None = 1.0
    """Clip the global gradient norm to this value (> 0); ``null`` disables clipping (the norm is
    still logged)."""

    def __post_init__(self) -> None:
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(
                f"grad_clip must be > 0, got {self.grad_clip}; use grad_clip: null to disable clipping"
            )
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.warmup_ratio is not None:
            if not 0.0 <= self.warmup_ratio <= 1.0:
                raise ConfigError(f"warmup_ratio must be in [0, 1], got {self.warmup_ratio}")
            if self.warmup_steps:
                raise ConfigError(f"warmup_steps ({self.warmup_steps}) and warmup_ratio ({self.warmup_ratio}) "
                                  "both set the warmup; give one of them")

    def warmup_for(self, total_steps: int) -> int:
        """Warmup steps of a run of ``total_steps`` optimizer steps: ``warmup_steps``, or
        ``warmup_ratio`` of the total rounded up (as transformers' ``get_warmup_steps``). A
        method, because the total is known only once the data are tokenised and scheduled."""
        if self.warmup_ratio is None:
            return self.warmup_steps
        return math.ceil(total_steps * self.warmup_ratio)


@dataclass
class EvalConfig:
    """Validation loss during training: on which rows, and when."""

    eval_fraction: float = 0.0
    """Fraction of training rows held out for validation loss."""
    eval_data: list[DataSource] = field(default_factory=list)
    """Held-out validation files (added to the ``eval_fraction`` rows)."""
    eval_every: int | None = None
    """Compute validation loss every N optimizer steps (and always at the end)."""
    eval_at_samples: list[int] = field(default_factory=list)
    """Also compute validation loss when the samples seen first reach each of these counts."""

    def due(self, step: int, total_steps: int, samples_before: int, samples_now: int) -> bool:
        """Whether validation runs after optimizer ``step`` (which took the samples seen from
        ``samples_before`` to ``samples_now``): every ``eval_every`` steps, and at each count of
        ``eval_at_samples`` the step crossed. The last step is evaluated anyway."""
        every = self.eval_every is not None and step % self.eval_every == 0 and step < total_steps
        return every or any(samples_before < n <= samples_now for n in self.eval_at_samples)

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        _at_least_one(self, "eval_every")


@dataclass
class NumericsConfig:
    """Where and in which precision the model computes, and with which kernels."""

    dtype: DType = "auto"
    """``auto``: bf16 on a GPU that supports it, float32 on CPU; or ``bfloat16`` / ``float32``.
    ``float16`` is refused: training it needs a gradient scaler, which tunescout does not run."""
    mixed_precision: bool = True
    """With a half-precision ``dtype``, keep full fine-tuning weights and optimizer state in
    float32 and compute the forward pass in ``dtype`` (autocast). At recipe learning rates
    (~1e-5) most bf16 weight updates would round away. ``false`` trains the weights in
    ``dtype`` directly (half the memory). LoRA always keeps the frozen base in ``dtype``."""
    attn_implementation: str = "auto"
    """``auto``: flash_attention_2 when installed on a GPU, else flex_attention where torch can
    train it and the architecture has it (a GPU), else sdpa. With flash attention (2 or 3) packed
    rows carry explicit sequence boundaries to its variable-length kernels; flex attention builds
    a block mask from the restarting position ids and skips the blocks between samples. One of
    :data:`ATTN_IMPLEMENTATIONS`, or a kernel id of the Hub's ``kernels`` package (``org/name``),
    passed to transformers as written."""
    gradient_checkpointing: bool = False
    """Recompute each layer's activations in the backward pass: about a third more compute for
    much less activation memory (larger micro-batches fit). The loss and gradients are the same."""
    compile: bool = False
    """``torch.compile`` each decoder layer (regional compilation; the first steps pay the
    compile time). Part of the run's identity: fused kernels round differently."""
    liger: bool = False
    """Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU) on a CUDA GPU; needs the ``liger``
    extra (``pip install 'tunescout[liger]'``). tunescout's own loss is kept. Part of the
    run's identity, as ``compile``."""
    device: str = "auto"
    """``auto``: the first CUDA GPU when there is one, else the CPU; or a torch device string such as ``cuda:1``."""

    def __post_init__(self) -> None:
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS and "/" not in self.attn_implementation:
            raise ConfigError(f"attn_implementation: must be one of {list(ATTN_IMPLEMENTATIONS)} or a Hub kernel id "
                              f"(org/name), got {self.attn_implementation!r}"
                              f"{did_you_mean(self.attn_implementation, ATTN_IMPLEMENTATIONS)}")
        if self.dtype == "float16":
            # Without a loss scaler, float16 gradients below ~6e-8 flush to zero and training
            # silently stalls; bfloat16 has float32's exponent range and needs no scaler.
            raise ConfigError(
                "dtype: float16 is not supported: tunescout trains without a gradient scaler, so "
                "float16 gradients would underflow; use bfloat16 (or float32, or auto)"
            )


@dataclass
class OutputConfig:
    """What the run leaves behind and who watches it."""

    output_dir: str = "runs/example"
    """The run directory: config, telemetry, evaluations, checkpoints, the saved model, ``result.json``."""
    checkpoint_every: int | None = None
    """Write a resumable checkpoint every N optimizer steps (and at the end)."""
    save_model: bool = True
    """Save the trained model (or LoRA adapter) to ``output_dir/model`` at the end."""
    merge_lora: bool = False
    """Save LoRA runs as a merged full model instead of an adapter."""
    progress: bool = True
    """Show a progress bar (only on an interactive terminal)."""
    track: list[str] = field(default_factory=list)
    """Experiment trackers that mirror the run (step records, config, status, final scores):
    ``mlflow``, ``tensorboard``, ``wandb`` (``pip install 'tunescout[track]'``). Checked here, when
    the config is built: an unknown name or a missing package fails before training."""
    track_group: str | None = None
    """Groups runs in the trackers (MLflow experiment, W&B group); a study sets its name."""

    def __post_init__(self) -> None:
        _at_least_one(self, "checkpoint_every")
        if self.track:
            from tunescout.track import check_trackers  # names and installs only; no backend is imported

            check_trackers(self.track)


GROUPS: dict[str, type] = {"processing": ProcessingConfig, "batch": BatchConfig, "optim": OptimConfig,
                           "evaluation": EvalConfig, "numerics": NumericsConfig, "output": OutputConfig}
""":class:`TrainConfig`'s groups by attribute name. A YAML may write a setting flat
(``learning_rate: 1e-4``) or under its group (``optim: {learning_rate: 1e-4}``); field names are
unique across groups, so the flat name alone says where it goes."""

GROUP_OF: dict[str, str] = {f.name: group for group, cls in GROUPS.items() for f in dataclasses.fields(cls)}
"""Each grouped setting's group."""


@dataclass
class TrainConfig:
    """Everything one training run needs, grouped by concern. Defaults follow the SFT recipe
    (``tunescout/presets/recipe.yaml``).

    Settings are read grouped (``config.optim.learning_rate``) and written flat or grouped:
    :meth:`of` and :func:`build_config` take flat keys, :meth:`to_dict` gives them back flat, as
    YAML files, overrides, study grids and stored trials name them.
    """

    model: str = ""
    """Model path, hub id, or a ``.gguf`` file."""
    tokenizer: str | None = None
    """Tokenizer path or hub id; defaults to ``model``."""
    trust_remote_code: bool = False
    """Let a model or tokenizer that ships its own Python code (an ``auto_map`` in its config, for
    an architecture transformers has no class for) run it. Off, such a model is refused with an
    error, and nothing is asked on stdin. Turn it on only for code you have read and trust."""
    method: Method = "full"
    """``full`` fine-tuning or ``lora``."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """Adapter settings, read only when ``method: lora``."""
    data: list[DataSource] = field(default_factory=list)
    """One or more datasets; each may carry a ``phase``."""
    seed: int = 42
    """Seeds the data order, the held-out split, LoRA's initialisation and dropout."""
    processing: ProcessingConfig = field(default_factory=ProcessingConfig)
    """Rows to samples: strategy, length, loss tokens, chat template."""
    batch: BatchConfig = field(default_factory=BatchConfig)
    """Effective batch, packing, run length."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """AdamW and the learning-rate schedule."""
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    """Validation loss: rows and times."""
    numerics: NumericsConfig = field(default_factory=NumericsConfig)
    """Device, precision, attention kernel, compilation."""
    output: OutputConfig = field(default_factory=OutputConfig)
    """Run directory, checkpoints, saved model, trackers."""

    def __post_init__(self) -> None:
        for name, value in self._flat_items():  # also when built in Python, where no YAML check ran
            numbers = value if isinstance(value, (tuple, list)) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
                raise ConfigError(f"{name}: must be a finite number, got {value!r}")
        p, b = self.processing, self.batch
        if p.max_length > b.max_tokens_per_micro_batch:
            raise ConfigError(
                f"max_length ({p.max_length}) exceeds max_tokens_per_micro_batch "
                f"({b.max_tokens_per_micro_batch}): one sample must fit in a micro-batch"
            )
        if b.max_tokens_per_row is not None and b.max_tokens_per_row < p.max_length:
            raise ConfigError(
                f"max_tokens_per_row ({b.max_tokens_per_row}) is less than max_length "
                f"({p.max_length}): one sample must fit in a packed row"
            )
        if p.strategy == "phased" and any(d.phase is None for d in self.data):
            raise ConfigError("strategy: phased needs a `phase` on every data entry")

    def _flat_items(self) -> list[tuple[str, Any]]:
        top = [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in GROUPS]
        return top + [(name, getattr(getattr(self, GROUP_OF[name]), name)) for name in GROUP_OF]

    @classmethod
    def of(cls, **settings: Any) -> TrainConfig:
        """A config from flat (or grouped) settings, checked as a YAML file is:
        ``TrainConfig.of(model="...", method="lora", learning_rate=2e-4, data=["train.jsonl"])``."""
        return build_config(settings)

    def updated(self, **changes: Any) -> TrainConfig:
        """A copy with some settings changed, named flat (``learning_rate=...``), grouped, or
        dotted as a grid names them (``**{"lora.r": 8}``: the adapter's other settings stay), and
        checked again; the settings left alone keep their values as they are."""
        changes = nest_dotted(changes)
        if isinstance(changes.get("lora"), dict):
            changes["lora"] = {**dataclasses.asdict(self.lora), **changes["lora"]}
        top, grouped = _split(_normalise_data(_normalise_data(_flat(changes), "data"), "eval_data"))
        groups = {group: dataclasses.replace(getattr(self, group), **values) for group, values in grouped.items()}
        return dataclasses.replace(self, **top, **groups)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON-safe) of every setting under its flat name: the form run
        directories, stored trials and run identities keep, so grouping changed none of them."""
        return {name: _plain(value) for name, value in self._flat_items()}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _at_least_one(group: Any, *names: str) -> None:
    for name in names:
        value = getattr(group, name)
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be >= 1 or null, got {value}")


def _check_template(template: str) -> None:
    """A ``chat_template`` must compile as Jinja (as transformers renders it): a typo is refused
    here, naming its line, and not at the first row of the data."""
    import jinja2

    try:
        jinja2.Environment().parse(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"chat_template: not a valid Jinja template (line {exc.lineno}: {exc.message})") from None


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a type hint, converting where it is lossless (int -> float)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(hint)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(hint, value, prefix=f"{key}.")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        return as_number(key, value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(hint)}")  # pragma: no cover


def _build(cls: type, raw: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys and types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(f"unknown key `{prefix}{key}`{did_you_mean(key, names, prefix)}")
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{prefix or cls.__name__}: {exc}") from None


def _normalise_data(raw: dict[str, Any], key: str) -> dict[str, Any]:
    """Let a data field be a single path, a list of paths, or a list of mappings."""
    data = raw.get(key)
    if isinstance(data, (str, dict)):
        data = [data]
    if isinstance(data, list):
        raw[key] = [{"path": d} if isinstance(d, str) else d for d in data]
    return raw


def _flat(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with each group's mapping (``optim: {learning_rate: 1e-4}``, or the override
    ``optim.learning_rate=1e-4``) spread into flat keys, so that everything after reads one form."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in GROUPS:
            out[ALIASES.get(key, key)] = value
            continue
        if isinstance(value, GROUPS[key]):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if not isinstance(value, dict):
            names = ", ".join(f.name for f in dataclasses.fields(GROUPS[key]))
            raise ConfigError(f"{key}: expected a mapping of its settings ({names}), got {value!r}")
        for name, inner in value.items():
            name = ALIASES.get(name, name)
            if GROUP_OF.get(name) != key:
                group_names = [f.name for f in dataclasses.fields(GROUPS[key])]
                home = f" (it belongs to `{GROUP_OF[name]}`)" if name in GROUP_OF else ""
                raise ConfigError(f"unknown key `{key}.{name}`{home or did_you_mean(name, group_names, key + '.')}")
            out[name] = inner
    return out


def _split(flat: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Flat settings as (top-level values, values by group), each checked against its type hint."""
    top: dict[str, Any] = {}
    grouped: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        group = GROUP_OF.get(key)
        if group is not None:
            grouped.setdefault(group, {})[key] = _coerce(value, _hints(GROUPS[group])[key], key)
        elif key in _hints(TrainConfig) and key not in GROUPS:
            top[key] = _coerce(value, _hints(TrainConfig)[key], key)
        else:
            settings = [*(k for k in _hints(TrainConfig) if k not in GROUPS), *GROUP_OF]
            raise ConfigError(f"unknown key `{key}`{did_you_mean(key, settings)}")
    return top, grouped


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build_train(flat: dict[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from flat keys."""
    top, grouped = _split(flat)
    return TrainConfig(**top, **{group: cls(**grouped.get(group, {})) for group, cls in GROUPS.items()})


def build_config(raw: dict[str, Any], overrides: list[str] | None = None) -> TrainConfig:
    """Build a :class:`TrainConfig` from a mapping and optional ``key=value`` overrides, each
    naming settings flat (``learning_rate``) or under their group (``optim.learning_rate``).

    Hugging Face ``TrainingArguments`` names (``num_train_epochs``, ``max_grad_norm``, ...) are
    accepted for their tunescout keys (see :mod:`tunescout.hf_args`).

    Raises:
        ConfigError: unknown key, wrong type, or inconsistent values.
    """
    from tunescout.hf_args import resolve_hf_names

    # Transformers' names are resolved in each mapping alone: an override may replace a YAML key
    # under the other name, but one mapping giving both names is a contradiction.
    betas = OptimConfig.betas
    raw = resolve_hf_names(_flat(raw or {}), default_betas=betas)
    over = resolve_hf_names(_flat(parse_overrides(overrides or [])), base=raw, default_betas=betas)
    merged = _normalise_data(merge_nested(raw, over), "data")
    return _build_train(_normalise_data(merged, "eval_data"))


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping (an empty file is ``{}``).

    Every YAML the user writes (run config, study) fails the same way: a ConfigError naming the
    file, never a traceback from the parser.
    """
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a YAML run config (relative data paths resolve against the YAML's folder)."""
    raw = read_yaml_mapping(Path(path), "config") if path is not None else {}
    config = build_config(raw, overrides)
    if path is not None:
        base = Path(path).resolve().parent
        for source in [*config.data, *config.evaluation.eval_data]:
            if not source.hub:
                source.path = resolve_beside(source.path, base)
        for name in ("model", "tokenizer"):
            value = getattr(config, name)
            if value:
                setattr(config, name, resolve_beside(value, base))
    return config
