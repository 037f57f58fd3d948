"""Is the run still learning? Non-finite numbers, and runs that are finite but dead.

A learning rate far too high does not always give NaN: the weights can saturate so that every
gradient is exactly zero and the model predicts the uniform distribution (loss = ln(vocabulary)).
Such a run trains on at full cost and would be recorded ``completed``; the study must record it
``diverged`` like a NaN, so that a sweep stops paying for it and ``rank`` does not mistake its
final score for a configuration that merely did badly.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

__all__ = ["DEAD_WINDOW", "HealthWatch"]

DEAD_WINDOW = 5
"""Consecutive optimizer steps a dead signature must hold before the run is called dead."""

_UNIFORM_TOL = 1e-3  # |loss - ln(V)|: a uniform prediction, up to float rounding
_FLAT_TOL = 1e-4  # max - min of the window's losses: the loss no longer moves


@dataclass
class HealthWatch:
    """Watch each step's loss and gradient norm; :meth:`check` says why a run is lost, or ``None``.

    ``vocab_size`` (the output layer's width) enables the uniform-prediction test; without it
    only the zero-gradient test runs. A freshly initialised model also starts near ln(V), but its
    loss moves from step to step, so the test also asks that the loss stays flat.
    """

    vocab_size: int | None = None
    window: int = DEAD_WINDOW
    _losses: deque = field(default_factory=deque, init=False)
    _norms: deque = field(default_factory=deque, init=False)

    def check(self, step: int, loss: float, grad_norm: float) -> str | None:
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            return f"non-finite loss or grad norm at step {step} (loss {loss}, grad_norm {grad_norm})"
        for values, value in ((self._losses, loss), (self._norms, grad_norm)):
            values.append(value)
            if len(values) > self.window:
                values.popleft()
        if len(self._norms) < self.window:
            return None
        if all(norm == 0.0 for norm in self._norms):
            return f"dead run: gradient norm 0 for the {self.window} steps to step {step} (loss {loss:.4g})"
        if self.vocab_size and self.vocab_size > 1:
            uniform = math.log(self.vocab_size)
            flat = max(self._losses) - min(self._losses) < _FLAT_TOL
            if flat and all(abs(v - uniform) < _UNIFORM_TOL for v in self._losses):
                return (f"dead run: loss flat at ln(vocabulary) = {uniform:.4f} (uniform predictions) for the "
                        f"{self.window} steps to step {step}")
        return None
