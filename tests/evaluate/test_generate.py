"""Batched greedy generation on the tiny random Llama: exactness against an unbatched greedy loop."""

from __future__ import annotations

import pytest
import torch

from tunescout.evaluate.generate import generate_batched, render_prompt, stop_token_ids

PROMPTS = [
    [{"role": "user", "content": "What is 3 plus 4?"}],
    "The cat sees",
    [{"role": "system", "content": "Answer with one word."},
     {"role": "user", "content": "Repeat: alpha beta gamma delta north south east west"}],
    "a",
    "What is 12 plus 30? The answer is",
    [{"role": "user", "content": "Repeat: yes"}],
]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def _greedy_one(model, tokenizer, prompt, max_new_tokens: int) -> list[int]:
    """The reference: one unpadded prompt, argmax token by token, full forward each step, no cache."""
    ids = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=isinstance(prompt, str))["input_ids"]
    stops = set(stop_token_ids(tokenizer))
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(input_ids=torch.tensor([ids + new])).logits
            token = int(logits[0, -1].argmax())
            if token in stops:
                break
            new.append(token)
    return new


def test_matches_unbatched_greedy_reference_and_returns_only_new_tokens(model, tiny_tokenizer) -> None:
    got = generate_batched(model, tiny_tokenizer, PROMPTS, max_new_tokens=8, batch_size=4)
    want = [tiny_tokenizer.decode(_greedy_one(model, tiny_tokenizer, p, 8), skip_special_tokens=True).strip()
            for p in PROMPTS]
    assert got == want
    assert any(got), "the random model should say something for at least one prompt"
    for prompt, answer in zip(PROMPTS, got):
        if isinstance(prompt, str) and len(prompt) > 1:
            assert not answer.startswith(prompt)  # the prompt is not echoed back


def test_deterministic_and_batch_size_invariant(model, tiny_tokenizer) -> None:
    one = generate_batched(model, tiny_tokenizer, PROMPTS, max_new_tokens=6, batch_size=1)
    assert generate_batched(model, tiny_tokenizer, PROMPTS, max_new_tokens=6, batch_size=1) == one
    # Batches of 4 (and all at once) mix lengths, so every row but the longest is left-padded.
    for batch_size in (4, 16):
        assert generate_batched(model, tiny_tokenizer, PROMPTS, max_new_tokens=6, batch_size=batch_size) == one


@pytest.mark.parametrize("max_new_tokens", [1, 3, 7])
def test_max_new_tokens_is_respected(model, tiny_tokenizer, max_new_tokens, monkeypatch) -> None:
    generated = []
    real_generate = model.generate

    def spy(*args, **kwargs):
        out = real_generate(*args, **kwargs)
        generated.append(out.shape[1] - kwargs["input_ids"].shape[1])
        return out

    monkeypatch.setattr(model, "generate", spy)
    got = generate_batched(model, tiny_tokenizer, PROMPTS, max_new_tokens=max_new_tokens, batch_size=3)
    assert len(generated) == 2 and max(generated) <= max_new_tokens
    longer = generate_batched(model, tiny_tokenizer, PROMPTS, max_new_tokens=16, batch_size=3)
    for prompt, answer, long_answer in zip(PROMPTS, got, longer):
        reference = _greedy_one(model, tiny_tokenizer, prompt, max_new_tokens)
        assert answer == tiny_tokenizer.decode(reference, skip_special_tokens=True).strip()
        assert long_answer.startswith(answer)
    # "The cat sees" never stops on the random model: it fills exactly the budget.
    assert len(_greedy_one(model, tiny_tokenizer, PROMPTS[1], 16)) == 16


def test_modes_are_restored(model, tiny_tokenizer, monkeypatch) -> None:
    model.train()
    model.model.layers[0].eval()  # a mixed state must come back as it was, not as all-train
    before = {name: m.training for name, m in model.named_modules()}
    seen = {}
    real_generate = model.generate

    def spy(*args, **kwargs):
        seen["training"] = any(m.training for m in model.modules())
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    generate_batched(model, tiny_tokenizer, PROMPTS[:2], max_new_tokens=2)
    assert seen["training"] is False  # dropout off while generating
    assert {name: m.training for name, m in model.named_modules()} == before
    model.eval()
    generate_batched(model, tiny_tokenizer, PROMPTS[:2], max_new_tokens=2)
    assert not any(m.training for m in model.modules())


def test_modes_are_restored_when_generation_fails(model, tiny_tokenizer, monkeypatch) -> None:
    model.train()

    def boom(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(model, "generate", boom)
    with pytest.raises(RuntimeError, match="out of memory"):
        generate_batched(model, tiny_tokenizer, PROMPTS[:1])
    assert all(m.training for m in model.modules())
    model.eval()


def test_peft_model_generates_like_its_base(model, tiny_model_dir, tiny_tokenizer) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    peft_model.train()
    # A fresh adapter is the identity (B = 0), so the answers are the base model's.
    got = generate_batched(peft_model, tiny_tokenizer, PROMPTS, max_new_tokens=6, batch_size=4)
    assert got == generate_batched(model, tiny_tokenizer, PROMPTS, max_new_tokens=6, batch_size=4)
    assert peft_model.training and all(m.training for m in peft_model.modules())


def test_tokenizer_is_left_untouched_and_empty_input_is_fine(model, tiny_tokenizer) -> None:
    side = tiny_tokenizer.padding_side
    assert generate_batched(model, tiny_tokenizer, [], max_new_tokens=4) == []
    generate_batched(model, tiny_tokenizer, PROMPTS, max_new_tokens=2, batch_size=4)
    assert tiny_tokenizer.padding_side == side


def test_stop_tokens_include_end_of_turn(tiny_model_dir, tiny_tokenizer) -> None:
    from transformers import AutoTokenizer

    im_end = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert stop_token_ids(tiny_tokenizer) == [im_end]  # the tiny tokenizer's eos is <|im_end|> already
    other = AutoTokenizer.from_pretrained(tiny_model_dir, eos_token="<|endoftext|>")
    assert stop_token_ids(other) == [other.convert_tokens_to_ids("<|endoftext|>"), im_end]


@pytest.mark.parametrize(("kwargs", "match"), [({"max_new_tokens": 0}, "max_new_tokens"), ({"batch_size": 0}, "batch_size")])
def test_bad_sizes_are_errors(model, tiny_tokenizer, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        generate_batched(model, tiny_tokenizer, PROMPTS, **kwargs)


def test_checkpoint_generation_defaults_do_not_leak_into_greedy(model, tiny_model_dir, tiny_tokenizer, caplog) -> None:
    from transformers import AutoModelForCausalLM

    greedy = generate_batched(model, tiny_tokenizer, PROMPTS, max_new_tokens=6, batch_size=4)
    chatty = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = chatty.generation_config  # what a chat model's generation_config.json often holds
    config.do_sample, config.temperature, config.top_p, config.top_k = True, 0.2, 0.9, 20
    config.repetition_penalty, config.min_length = 1.5, 30
    with caplog.at_level("WARNING"):
        assert generate_batched(chatty, tiny_tokenizer, PROMPTS, max_new_tokens=6, batch_size=4) == greedy
    assert not [r for r in caplog.records if "generation flags" in r.getMessage()]


def test_chat_prompt_without_a_template_is_a_clear_error(model, tiny_model_dir) -> None:
    from transformers import AutoTokenizer

    bare = AutoTokenizer.from_pretrained(tiny_model_dir)
    bare.chat_template = None
    with pytest.raises(ValueError, match="needs a chat template"):
        generate_batched(model, bare, PROMPTS)
    assert generate_batched(model, bare, ["The cat sees"], max_new_tokens=2)  # plain strings still work
