"""Shipped starting configurations, each with where it comes from.

``recipe.yaml`` holds the SFT recipe's defaults, ``cbs.yaml`` the Coverage-based Search study's
top-ranked configurations. A preset is a set of train-config overrides plus provenance; it never
names a model or data, which the user adds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Preset", "load_presets", "find_presets"]

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Preset:
    """One shipped configuration: train-config overrides for a method and model families, with
    where it comes from (``provenance``, ``source``) and the YAML file that holds it."""

    name: str
    families: tuple[str, ...]
    method: str
    config: dict[str, Any]
    provenance: str
    source: str = ""
    file: str = field(default="", compare=False)
    size: str = ""
    """Parameter count of the models it was found on: ``8B``, or a range ``3B-8B``."""

    def size_range(self) -> tuple[float, float] | None:
        """``size`` in parameters, ``(low, high)``; None when the preset does not say."""
        parts = [_parameters(x) for x in self.size.split("-")] if self.size else []
        return (parts[0], parts[-1]) if parts else None


def _parameters(text: str) -> float:
    """``"135M"`` -> 1.35e8, ``"8B"`` -> 8e9."""
    scale = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
    text = text.strip().upper()
    return float(text[:-1]) * scale[text[-1]] if text and text[-1] in scale else float(text)


def load_presets(folder: Path = HERE) -> list[Preset]:
    """Every preset in the YAML files of ``folder``, in file then listed order."""
    out = []
    for path in sorted(folder.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        for p in raw["presets"]:
            out.append(Preset(p["name"], tuple(p["families"]), p["method"], dict(p["config"]),
                              p["provenance"], raw.get("source", ""), path.name, str(p.get("size", ""))))
    return out


def find_presets(family: str | None = None, method: str | None = None) -> list[Preset]:
    """Presets for a model family (``llama``, ``mistral``, ...) and/or method (``full``, ``lora``)."""
    return [p for p in load_presets()
            if (family is None or family.lower() in p.families) and (method is None or p.method == method)]
