"""Greedy batched generation for evaluation: chat or plain prompts in, answer strings out.

Decoder-only models continue the last token of a row, so batches are padded on the *left*: every
prompt then ends at the same column and the first generated token of each row follows its own
prompt, not padding. We pad by hand rather than through the tokenizer, so the tokenizer's
``padding_side`` (which training code may rely on) is never touched, and so chat prompts and raw
strings can be encoded the way training encoded them (see ``_encode_prompt``).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from tunescout.settings import did_you_mean

__all__ = ["Prompt", "generate_batched", "render_prompt", "stop_token_ids"]

Prompt = str | Sequence[dict[str, str]]
"""A raw string, used as-is, or a chat (list of ``{"role", "content"}`` messages)."""

END_OF_TURN = "<|im_end|>"
"""ChatML's end of turn; some tokenizers declare a different eos, yet their chats end with this."""


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Token ids that end an answer: the tokenizer's eos and, when in the vocabulary, ``<|im_end|>``.

    Raises:
        ValueError: the tokenizer has neither, so generation could only stop at the length limit.
    """
    ids = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    end_of_turn = tokenizer.get_vocab().get(END_OF_TURN)
    if end_of_turn is not None and end_of_turn not in ids:
        ids.append(int(end_of_turn))
    if not ids:
        raise ValueError("the tokenizer has no eos token and no <|im_end|>; set tokenizer.eos_token")
    return ids


def render_prompt(tokenizer: Any, prompt: Prompt) -> str:
    """The text a prompt becomes: chats through the chat template with the assistant header appended.

    Raises:
        ValueError: the prompt is a chat and the tokenizer has no chat template.
    """
    if isinstance(prompt, str):
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("a chat prompt needs a chat template and the tokenizer has none; install the one training "
                         "used (tunescout.data.ensure_chat_template) or pass plain-string prompts")
    return tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=False)


def _encode_prompt(tokenizer: Any, prompt: Prompt) -> list[int]:
    # As in training (data/tokenize.py): rendered chats carry their own special tokens (a template
    # that writes BOS would get a second one), raw strings get the tokenizer's usual ones.
    ids = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=isinstance(prompt, str))["input_ids"]
    if not ids:
        raise ValueError(f"prompt {prompt!r} encodes to no tokens")
    return list(ids)


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    input_ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], dtype=torch.long)
    attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return input_ids, attention_mask


def _cut_at_stop(ids: list[int], stops: set[int]) -> list[int]:
    """Tokens before the first stop token: after it a finished row only holds padding."""
    for i, token in enumerate(ids):
        if token in stops:
            return ids[:i]
    return ids


def _greedy_config(max_new_tokens: int, stops: list[int], pad_id: int,
                   overrides: Mapping[str, Any] | None = None) -> Any:
    """A generation config for plain greedy decoding, with ``overrides`` on top.

    ``generate`` fills every field we leave unset from the checkpoint's ``generation_config.json``,
    so the fields a checkpoint commonly sets are pinned to their neutral values here: a
    repetition penalty or a minimum length would change greedy answers, and sampling settings
    would only trigger "flags ignored" warnings. ``overrides`` (``{"do_sample": True,
    "temperature": 0.7}``, ``{"num_beams": 4}``) are the caller's explicit choice and win.

    Raises:
        ValueError: an override that is not a ``GenerationConfig`` field, or an invalid combination.
    """
    from transformers import GenerationConfig

    settings: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=stops, pad_token_id=pad_id,
        use_cache=True,  # training loads models with use_cache=False; without a KV cache each step is O(length)
        temperature=1.0, top_p=1.0, top_k=50, repetition_penalty=1.0, no_repeat_ngram_size=0,
        min_length=0,
    )
    known = set(GenerationConfig().to_dict())
    for key in overrides or {}:
        if key not in known:
            raise ValueError(f"unknown generation setting `{key}`{did_you_mean(key, sorted(known))}")
    settings.update(overrides or {})
    config = GenerationConfig(**settings)
    config.validate(strict=True)
    return config


def generate_batched(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    max_new_tokens: int = 32,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    generation: Mapping[str, Any] | None = None,
) -> list[str]:
    """Greedy answers to ``prompts`` (unless ``generation`` says otherwise), in the same order.

    Prompts are sorted by length before batching (less padding, and a long prompt does not slow
    a batch of short ones), and the model is put in eval mode for the duration, then every
    module is returned to the mode it was in, so calling this mid-training is safe.

    Args:
        model: a causal LM (``PreTrainedModel`` or ``PeftModel``), already on ``device``.
        tokenizer: its tokenizer; needs a chat template when any prompt is a chat.
        prompts: chats (rendered with ``add_generation_prompt=True``) or raw strings (as-is).
        max_new_tokens: most tokens generated per prompt.
        batch_size: prompts per ``generate`` call.
        device: where the input tensors go.
        generation: ``GenerationConfig`` settings over greedy decoding (sampling, beams, penalties).

    Returns:
        The generated text of each prompt: new tokens only, cut at the first stop token, decoded
        without special tokens and stripped.

    Raises:
        ValueError: bad sizes, an empty prompt, a tokenizer with nothing to stop on, or a bad
            ``generation`` setting.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens} and {batch_size}")
    if not prompts:
        return []
    stops = stop_token_ids(tokenizer)
    stop_set = set(stops)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    config = _greedy_config(max_new_tokens, stops, pad_id, generation)
    encoded = [_encode_prompt(tokenizer, p) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    answers: list[str] = [""] * len(encoded)

    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            input_ids, attention_mask = _left_pad([encoded[i] for i in chunk], pad_id)
            with torch.no_grad():
                out = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                     generation_config=config)
            new_tokens = out[:, input_ids.shape[1]:].tolist()
            for i, ids in zip(chunk, new_tokens):
                text = tokenizer.decode(_cut_at_stop(ids, stop_set), skip_special_tokens=True)
                answers[i] = text.strip()
    finally:
        for module, training in modes.items():
            module.train(training)
    return answers
