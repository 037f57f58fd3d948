"""Turn normalised examples into token ids and loss labels.

Chat rows are rendered with the tokenizer's chat template. Which tokens carry loss is found from
character spans: for every assistant turn ``i`` we render the conversation up to ``i`` with the
generation prompt and up to ``i`` inclusive; the text between the two is the assistant's turn
(its content and the end-of-turn marker, so the model learns to stop). Token offsets then map
those spans to tokens. This works for any template whose renderings are prefixes of each other,
which we check rather than assume.

TRL's conversational prompt/completion rows are rendered as TRL renders them: the prompt with the
generation prompt (or, when it ends with an assistant message, continuing that message), the
whole row without; the completion is what the second adds to the first, and all of it carries
loss, whatever the roles of its messages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

from tunescout.data.formats import DataError, Example

__all__ = ["TokenizedSample", "TokenizeStats", "DEFAULT_CHAT_TEMPLATE", "ensure_chat_template", "tokenize_examples"]

log = logging.getLogger(__name__)

IGNORE = -100

# ChatML, used only when the tokenizer has no template of its own (and the user gave none).
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TokenizedSample:
    """Token ids of one example and their labels (``-100`` where no loss is taken).

    Labels are aligned with ``input_ids`` (not shifted): ``labels[j]`` says whether token ``j``
    is a training target. Packing shifts them per sample, so no sample predicts its neighbour.
    """

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    source: int = 0
    """Index of the data source this sample came from."""

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_loss_tokens(self) -> int:
        """Tokens that contribute to the loss (the first token is never predicted)."""
        return sum(1 for label in self.labels[1:] if label != IGNORE)


@dataclass
class TokenizeStats:
    """What tokenisation did to the rows, so a changed experiment is never silent."""

    rows: int = 0
    kept: int = 0
    truncated: int = 0
    dropped_too_long: int = 0
    dropped_no_loss: int = 0
    tokens: int = 0
    loss_tokens: int = 0
    by_source: dict[int, int] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"{self.kept}/{self.rows} rows kept, {self.tokens} tokens ({self.loss_tokens} with loss); "
            f"truncated {self.truncated}, dropped {self.dropped_too_long} too long and "
            f"{self.dropped_no_loss} with no loss tokens"
        )


def ensure_chat_template(tokenizer: Any, template: str | None = None) -> None:
    """Install ``template`` (or ChatML when the tokenizer has none) on the tokenizer."""
    if template:
        tokenizer.chat_template = template
    elif not getattr(tokenizer, "chat_template", None):
        log.warning("tokenizer has no chat template; using ChatML (set `chat_template` to override)")
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE


def _render(tokenizer: Any, messages: Sequence[dict[str, str]], generation_prompt: bool,
            continue_final: bool = False) -> str:
    if not messages:
        return ""
    if continue_final:  # only passed when needed: not every template (or tokenizer) knows it
        return tokenizer.apply_chat_template(list(messages), tokenize=False, continue_final_message=True)
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)


def _generation_prompt(tokenizer: Any) -> str:
    """The text a template adds for ``add_generation_prompt`` (e.g. ``<|im_start|>assistant\n``)."""
    probe = [{"role": "user", "content": "x"}]
    with_prompt = _render(tokenizer, probe, generation_prompt=True)
    without = _render(tokenizer, probe, generation_prompt=False)
    return with_prompt[len(without):] if with_prompt.startswith(without) else ""


def _chat_text_and_spans(tokenizer: Any, messages: Sequence[dict[str, str]], where: str) -> tuple[str, list[tuple[int, int]]]:
    text = _render(tokenizer, messages, generation_prompt=False)
    spans = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        # A conversation opening with the assistant has no history to render: its turn header
        # is still the generation prompt, which must not carry loss.
        before = _render(tokenizer, messages[:i], generation_prompt=True) if i else _generation_prompt(tokenizer)
        upto = _render(tokenizer, messages[: i + 1], generation_prompt=False)
        if not (upto.startswith(before) and text.startswith(upto)):
            raise DataError(
                f"{where}: the chat template does not render conversations as prefixes of each other, "
                "so assistant tokens cannot be located; set `train_on: all` or give a `chat_template`"
            )
        spans.append((len(before), len(upto)))
    return text, spans


def _prompt_completion_chat(tokenizer: Any, ex: Example) -> tuple[str, tuple[int, int]]:
    """The text of a TRL conversational row and the character span of its completion.

    As TRL's ``apply_chat_template``: a prompt ending with a user (or system/tool) turn is
    rendered with the generation prompt, so the assistant header is prompt and carries no loss;
    one ending with an assistant message is continued, so the completion extends that message.
    """
    k = ex.completion_from
    prompt, completion = ex.messages[:k], ex.messages[k:]
    if not completion:
        raise DataError(f"{ex.where}: a prompt-only row (`prompt` without `completion`) has no completion to "
                        "train on or to take a validation loss over; such rows can only be evaluation prompts")
    continue_final = prompt[-1]["role"] == "assistant"
    before = _render(tokenizer, prompt, generation_prompt=not continue_final, continue_final=continue_final)
    text = _render(tokenizer, ex.messages, generation_prompt=False)
    if not text.startswith(before):
        raise DataError(
            f"{ex.where}: the chat template does not render the prompt as a prefix of prompt + completion, "
            "so the completion tokens cannot be located; set `train_on: all` or give a `chat_template`"
        )
    return text, (len(before), len(text))


def _label_spans(input_ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    labels = [IGNORE] * len(input_ids)
    k = 0
    for j, (start, end) in enumerate(offsets):
        while k < len(spans) and spans[k][1] <= start:
            k += 1
        if k < len(spans) and start < spans[k][1] and end > spans[k][0]:
            labels[j] = input_ids[j]
    return labels


def _encode(tokenizer: Any, text: str, spans: list[tuple[int, int]] | None, add_special: bool) -> tuple[list[int], list[int]]:
    """Encode ``text``; label tokens inside ``spans`` (or every token when spans is None)."""
    enc = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=spans is not None)
    ids = list(enc["input_ids"])
    if spans is None:
        return ids, list(ids)
    return ids, _label_spans(ids, [tuple(o) for o in enc["offset_mapping"]], spans)


def _tokenize_one(ex: Example, tokenizer: Any, train_on: str, use_chat: bool) -> tuple[list[int], list[int]]:
    if ex.kind == "text":
        ids, labels = _encode(tokenizer, ex.text, None, add_special=True)
        eos = tokenizer.eos_token_id
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
            labels.append(eos)
        return ids, labels
    if ex.kind == "prompt_completion" and not use_chat:
        text = ex.prompt + ex.completion + (tokenizer.eos_token or "")
        spans = None if train_on == "all" else [(len(ex.prompt), len(text))]
        return _encode(tokenizer, text, spans, add_special=True)
    messages = ex.messages or (
        {"role": "user", "content": ex.prompt},
        {"role": "assistant", "content": ex.completion},
    )
    if ex.completion_from is not None:  # TRL conversational prompt/completion
        text, span = _prompt_completion_chat(tokenizer, ex)
        return _encode(tokenizer, text, None if train_on == "all" else [span], add_special=False)
    if train_on == "all":  # no spans needed, so no prefix-stability requirement either
        return _encode(tokenizer, _render(tokenizer, messages, generation_prompt=False), None, add_special=False)
    text, spans = _chat_text_and_spans(tokenizer, messages, ex.where)
    return _encode(tokenizer, text, spans, add_special=False)


def tokenize_examples(
    examples: Sequence[Example],
    tokenizer: Any,
    max_length: int,
    train_on: str = "completion",
    too_long: str = "truncate",
    source: int = 0,
    stats: TokenizeStats | None = None,
) -> list[TokenizedSample]:
    """Tokenise examples, applying the max-length policy and counting what it did.

    Args:
        examples: normalised rows (see :func:`tunescout.data.formats.read_examples`).
        tokenizer: a fast Hugging Face tokenizer (offsets are needed to place the labels).
        max_length: longest sample kept, in tokens.
        train_on: ``completion`` (assistant/completion tokens carry loss) or ``all``.
        too_long: ``truncate`` keeps the first ``max_length`` tokens; ``drop`` skips the row.
        source: index of the data source, kept on each sample.
        stats: counters to update (a new one is made when omitted).

    Raises:
        DataError: the tokenizer is not a fast one, the chat template cannot be masked, or a
            prompt-only row (no completion to train on), naming the row.
    """
    if train_on == "completion" and not getattr(tokenizer, "is_fast", False):
        raise DataError("masking the loss to completions needs a fast tokenizer (offset mapping)")
    stats = stats if stats is not None else TokenizeStats()
    use_chat = bool(getattr(tokenizer, "chat_template", None))
    out = []
    for ex in examples:
        stats.rows += 1
        ids, labels = _tokenize_one(ex, tokenizer, train_on, use_chat)
        if len(ids) > max_length:
            if too_long == "drop":
                stats.dropped_too_long += 1
                continue
            ids, labels = ids[:max_length], labels[:max_length]
            stats.truncated += 1
        sample = TokenizedSample(tuple(ids), tuple(labels), source)
        if len(ids) < 2 or sample.num_loss_tokens == 0:
            stats.dropped_no_loss += 1
            continue
        stats.kept += 1
        stats.tokens += len(ids)
        stats.loss_tokens += sample.num_loss_tokens
        stats.by_source[source] = stats.by_source.get(source, 0) + 1
        out.append(sample)
    return out
