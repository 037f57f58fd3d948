"""Per-optimizer-step telemetry records and the sinks that receive them.

The record is the unit the whole project reasons with: early stopping reads its loss and
gradient norm, the study store keeps every one, analysis correlates them with final scores.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

__all__ = ["EarlyStop", "JsonlSink", "Pause", "ProgressSink", "Sink", "StepRecord", "read_telemetry",
           "truncate_records"]

log = logging.getLogger("tunescout.train")


@dataclass(frozen=True)
class StepRecord:
    """What one optimizer step did."""

    step: int
    """1-based optimizer step."""
    samples: int
    """Training samples seen so far (cumulative)."""
    tokens: int
    """Input tokens processed so far (cumulative)."""
    loss: float
    """Mean next-token loss over every loss token of this step's effective batch."""
    grad_norm: float
    """Global L2 norm of the gradient, before clipping."""
    lr: float
    tokens_per_s: float
    """Throughput of this step."""
    wall_s: float
    """Seconds since the run started (resumed runs continue the count)."""
    loss_tokens: int = 0
    """Tokens that carried loss in this step."""
    micro_batches: int = 0
    pad_tokens: int = 0
    """Padding in this step's micro-batches (rows of one micro-batch are padded to the longest)."""
    phase: int = 0
    epoch: float = 0.0
    val_loss: float | None = None
    """Validation loss measured after this step, when one was due (``eval_every``/``eval_at_samples``)."""
    metrics: dict[str, float] | None = None
    """Task metrics measured with the validation loss (see ``train(task_eval=...)``)."""
    mfu: float | None = None
    """Model FLOPs utilisation of this step on this device: the FLOPs its samples need (6·N per
    token plus per-sample attention, :mod:`tunescout.train.flops`) per second over the device's
    dense bf16 peak. ``None`` on a CPU or an unknown GPU (and in files written before it existed)."""

    def to_json(self) -> str:
        # Non-finite values are written as null: JSON has no NaN, and readers must not choke.
        data = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}
        return json.dumps(data)


@runtime_checkable
class Sink(Protocol):
    """Receives every step record. ``write`` must be cheap; ``close`` flushes at the end."""

    def write(self, record: StepRecord) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Pause:
    """An early-stop hook's verdict to pause: checkpoint now and end as ``paused``, to be
    resumed later (a study in ``promote`` mode pauses every trial at each rung)."""

    reason: str


EarlyStop = Callable[[StepRecord], "str | bool | Pause | None"]
"""Called after every step; :class:`Pause` pauses the run, another truthy return ends it as
``stopped`` (a string is the reason)."""


class JsonlSink:
    """Appends one JSON object per step to ``telemetry.jsonl``, flushed each step so a killed run
    keeps everything it logged."""

    def __init__(self, path: str | Path, keep_steps: int | None = None) -> None:
        self.path = Path(path)
        if keep_steps is not None:
            truncate_records(self.path, keep_steps)
        self._fh = self.path.open("a", encoding="utf-8")

    def write(self, record: StepRecord) -> None:
        self._fh.write(record.to_json() + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _lines(path: Path) -> list[tuple[str, dict[str, Any] | None]]:
    """Each line of a JSONL file with its record, None where it does not parse (a run killed in
    the middle of a write leaves its last line torn) or is blank; [] when there is no file."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            record = None
        out.append((line, record if isinstance(record, dict) else None))
    return out


def truncate_records(path: Path, step: int) -> None:
    """Keep JSONL records up to ``step`` (a resumed run redoes the steps after its checkpoint).

    A line that does not parse is dropped: the resumed run must not fail on a torn last line.
    """
    if path.exists():
        path.write_text("".join(line + "\n" for line, record in _lines(path)
                                if record is not None and record["step"] <= step))


def last_record(path: Path, step: int) -> dict[str, Any] | None:
    """The record of ``step`` in a JSONL file, or ``None`` (no file, no such record, torn line)."""
    return next((r for _, r in reversed(_lines(path)) if r is not None and r.get("step") == step), None)


def read_telemetry(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``telemetry.jsonl`` file into a list of dicts."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class ProgressSink:
    """A progress bar on an interactive terminal; otherwise a dense log line every few steps."""

    def __init__(self, total_steps: int, initial: int = 0, enabled: bool = True) -> None:
        self.total = total_steps
        self.every = max(1, total_steps // 20)
        self._initial, self._started = initial, time.monotonic()
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=initial, unit="step", dynamic_ncols=True)

    def write(self, record: StepRecord) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{record.loss:.4f}", gnorm=f"{record.grad_norm:.3f}",
                                  lr=f"{record.lr:.2e}", tok_s=f"{record.tokens_per_s:.0f}",
                                  **({} if record.mfu is None else {"mfu": f"{record.mfu:.1%}"}))
        elif record.step % self.every == 0 or record.step == self.total:
            log.info(
                "step %d/%d | loss %.4f | grad_norm %.4f | lr %.3e | %.0f tok/s%s | %d samples | %.1fs | eta %s",
                record.step, self.total, record.loss, record.grad_norm, record.lr, record.tokens_per_s,
                "" if record.mfu is None else f" | mfu {record.mfu:.1%}", record.samples, record.wall_s,
                self.eta(record.step),
            )

    def eta(self, step: int) -> str:
        """Time left at this process's pace so far (evaluations included), as ``1h02m``, ``3m05s`` or ``12s``."""
        done = step - self._initial
        if done <= 0:
            return "?"
        seconds = round((time.monotonic() - self._started) / done * max(0, self.total - step))
        hours, rest = divmod(seconds, 3600)
        minutes, secs = divmod(rest, 60)
        return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
