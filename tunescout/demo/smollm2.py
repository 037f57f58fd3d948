"""SmolLM2-135M-Instruct from PyPI (see :func:`tunescout.train.models.smollm2_gguf`)."""

from tunescout.train.models import SMOLLM2_INSTALL, smollm2_gguf

__all__ = ["SMOLLM2_INSTALL", "smollm2_gguf"]
