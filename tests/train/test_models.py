"""Model-loading helpers: ``dtype: auto`` never picks float16 (tunescout runs no gradient scaler)."""

from __future__ import annotations

import pytest
import torch

from tunescout.train.models import resolve_dtype


@pytest.mark.parametrize(("cuda", "bf16", "expected"), [
    (False, False, torch.float32),  # CPU: bf16 matmuls are slow there
    (True, True, torch.bfloat16),
    (True, False, torch.float32),  # a GPU without bf16 (V100, T4) trains in float32, not float16
])
def test_auto_dtype_is_bf16_or_float32(monkeypatch, cuda: bool, bf16: bool, expected: torch.dtype) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    device = torch.device("cuda" if cuda else "cpu")
    assert resolve_dtype("auto", device) == expected
    assert resolve_dtype("float32", device) == torch.float32 and resolve_dtype("bfloat16", device) == torch.bfloat16
