"""The demo's ``builtin:`` models, added through the ``tunescout.builtins`` entry point.

pyproject.toml names :func:`register`; :mod:`tunescout.builtins` calls it on the first
``builtin:`` lookup, so ``train/`` finds these models without importing ``demo/``.
"""

from __future__ import annotations

from typing import Callable

from tunescout.builtins import Factory
from tunescout.demo.base import ensure_demo_base
from tunescout.demo.default import ensure_tiny_model

__all__ = ["DEMO_BUILTINS", "register"]

DEMO_BUILTINS: dict[str, Factory] = {
    "tiny-llama": ensure_tiny_model,  # randomly initialised, built locally in seconds on first use
    "demo-base": ensure_demo_base,  # pretrained locally on first use (minutes on CPU), then cached
}


def register(add: Callable[[str, Factory], None]) -> None:
    """The entry point: ``add(name, factory)`` for each demo model (see :mod:`tunescout.builtins`)."""
    for name, factory in DEMO_BUILTINS.items():
        add(name, factory)
