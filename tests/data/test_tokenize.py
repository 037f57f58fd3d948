"""Tests for tunescout.data.tokenize (loss masks, length policy, templates) and data.prepare."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tunescout.config import DataSource
from tunescout.data.formats import DataError, Example
from tunescout.data.phases import Phase
from tunescout.data.prepare import prepare_data
from tunescout.data.tokenize import (
    DEFAULT_CHAT_TEMPLATE,
    IGNORE,
    TokenizedSample,
    TokenizeStats,
    ensure_chat_template,
    tokenize_examples,
)

EOT = "<|im_end|>"

# Renders the conversation newest-first: no rendering is a prefix of a longer one.
REVERSED_TEMPLATE = (
    "{% for m in messages|reverse %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
# Starts with the message count, which changes as the conversation grows.
COUNTER_TEMPLATE = (
    "[{{ messages|length }} messages]\n"
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
# A prefix-stable, non-ChatML template.
PLAIN_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    from tunescout.demo.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def tok(tiny_dir):
    """A fresh tokenizer per test (tests change its chat template)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_dir))


def chat(*turns: tuple[str, str]) -> Example:
    return Example("messages", messages=tuple({"role": r, "content": c} for r, c in turns), where="t.jsonl:7")


def loss_runs(tok, sample: TokenizedSample) -> list[str]:
    """Decoded runs of consecutive loss-carrying tokens."""
    runs, cur = [], []
    for tid, label in zip(sample.input_ids, sample.labels):
        if label == IGNORE:
            if cur:
                runs.append(cur)
                cur = []
        else:
            assert label == tid, "a label must equal its own input id (labels are not shifted)"
            cur.append(tid)
    if cur:
        runs.append(cur)
    return [tok.decode(r) for r in runs]


def loss_text(tok, sample: TokenizedSample) -> str:
    return "".join(loss_runs(tok, sample))


def masked_text(tok, sample: TokenizedSample) -> str:
    return tok.decode([t for t, lab in zip(sample.input_ids, sample.labels) if lab == IGNORE])


# --------------------------------------------------------------------------- chat rows


class TestChat:
    def test_single_turn_labels_answer_and_end_of_turn(self, tok):
        ex = chat(("user", "What is 2 plus 3?"), ("assistant", "5"))
        stats = TokenizeStats()
        [s] = tokenize_examples([ex], tok, max_length=256, stats=stats)
        assert tok.decode(s.input_ids) == tok.apply_chat_template(list(ex.messages), tokenize=False)
        assert loss_runs(tok, s) == ["5<|im_end|>\n"]
        assert masked_text(tok, s) == "<|im_start|>user\nWhat is 2 plus 3?<|im_end|>\n<|im_start|>assistant\n"
        n_loss = sum(1 for lab in s.labels if lab != IGNORE)
        assert s.num_loss_tokens == n_loss  # the first token is masked, so nothing is excluded
        assert (stats.rows, stats.kept, stats.tokens, stats.loss_tokens) == (1, 1, len(s), n_loss)
        assert stats.by_source == {0: 1}

    def test_multi_turn_only_assistant_turns_carry_loss(self, tok):
        ex = chat(
            ("system", "You add numbers."),
            ("user", "What is 1 plus 1?"),
            ("assistant", "The answer is 2."),
            ("user", "And 2 plus 2?"),
            ("assistant", "The answer is 4."),
            ("user", "Thanks"),
        )
        [s] = tokenize_examples([ex], tok, max_length=512)
        assert loss_runs(tok, s) == ["The answer is 2.<|im_end|>\n", "The answer is 4.<|im_end|>\n"]
        masked = masked_text(tok, s)
        assert masked == (
            "<|im_start|>system\nYou add numbers.<|im_end|>\n"
            "<|im_start|>user\nWhat is 1 plus 1?<|im_end|>\n<|im_start|>assistant\n"
            "<|im_start|>user\nAnd 2 plus 2?<|im_end|>\n<|im_start|>assistant\n"
            "<|im_start|>user\nThanks<|im_end|>\n"
        )

    def test_same_content_in_user_and_assistant(self, tok):
        # The mask comes from positions, not from matching text.
        ex = chat(("user", "seven"), ("assistant", "seven"), ("user", "seven"))
        [s] = tokenize_examples([ex], tok, max_length=256)
        assert loss_runs(tok, s) == ["seven<|im_end|>\n"]

    def test_train_on_all_labels_every_token(self, tok):
        ex = chat(("system", "s"), ("user", "q"), ("assistant", "a"))
        [s] = tokenize_examples([ex], tok, max_length=256, train_on="all")
        assert s.labels == s.input_ids
        assert s.num_loss_tokens == len(s) - 1

    def test_prompt_completion_uses_chat_template(self, tok):
        ex = Example("prompt_completion", prompt="What is 2 plus 3?", completion="5")
        [s] = tokenize_examples([ex], tok, max_length=256)
        assert tok.decode(s.input_ids) == "<|im_start|>user\nWhat is 2 plus 3?<|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n"
        assert loss_runs(tok, s) == ["5<|im_end|>\n"]

    def test_no_assistant_turn_is_dropped(self, tok):
        stats = TokenizeStats()
        exs = [chat(("system", "s"), ("user", "q")), chat(("user", "q"), ("assistant", "a"))]
        out = tokenize_examples(exs, tok, max_length=256, stats=stats)
        assert [loss_text(tok, s) for s in out] == ["a<|im_end|>\n"]
        assert (stats.rows, stats.kept, stats.dropped_no_loss, stats.dropped_too_long, stats.truncated) == (2, 1, 1, 0, 0)

    def test_custom_prefix_stable_template(self, tok):
        ensure_chat_template(tok, PLAIN_TEMPLATE)
        ex = chat(("user", "q"), ("assistant", "the answer"), ("user", "again"), ("assistant", "yes"))
        [s] = tokenize_examples([ex], tok, max_length=256)
        assert tok.decode(s.input_ids) == "user: q\nassistant: the answer\nuser: again\nassistant: yes\n"
        # The generation prompt ends with a space that BPE merges into the answer's first token
        # ("Ġthe"); a token straddling the boundary carries loss, so the space shows up here.
        assert loss_runs(tok, s) == [" the answer\n", " yes\n"]

    @pytest.mark.parametrize("template", [REVERSED_TEMPLATE, COUNTER_TEMPLATE], ids=["reversed", "counter"])
    def test_template_not_prefix_stable_raises(self, tok, template):
        tok.chat_template = template
        ex = chat(("user", "q"), ("assistant", "a"), ("user", "q2"), ("assistant", "a2"))
        with pytest.raises(DataError, match=r"^t\.jsonl:7: the chat template does not render conversations as prefixes"):
            tokenize_examples([ex], tok, max_length=256)

    def test_train_on_all_with_non_prefix_template(self, tok):
        tok.chat_template = REVERSED_TEMPLATE
        ex = chat(("user", "q"), ("assistant", "a"))
        [s] = tokenize_examples([ex], tok, max_length=256, train_on="all")
        assert tok.decode(s.input_ids) == "assistant: a\nuser: q\n"
        assert s.labels == s.input_ids

    def test_conversation_opening_with_assistant(self, tok):
        ex = chat(("assistant", "Hi there"), ("user", "q"), ("assistant", "a"))
        [s] = tokenize_examples([ex], tok, max_length=256)
        assert loss_runs(tok, s) == ["Hi there<|im_end|>\n", "a<|im_end|>\n"]

    def test_needs_fast_tokenizer(self):
        class Slow:
            is_fast = False
            chat_template = None

        with pytest.raises(DataError, match="needs a fast tokenizer"):
            tokenize_examples([Example("text", text="x")], Slow(), max_length=8)


# --------------------------------------------------------------------------- plain rows


class TestPlain:
    def test_text_labels_everything_and_ends_with_eos(self, tok):
        [s] = tokenize_examples([Example("text", text="The cat sees a red box.")], tok, max_length=256)
        assert s.labels == s.input_ids
        assert s.input_ids[-1] == tok.eos_token_id
        assert tok.decode(s.input_ids) == "The cat sees a red box." + EOT
        assert s.input_ids[:-1] == tuple(tok("The cat sees a red box.", add_special_tokens=False)["input_ids"])

    def test_text_already_ending_with_eos_not_doubled(self, tok):
        [s] = tokenize_examples([Example("text", text="one two" + EOT)], tok, max_length=256)
        assert tok.decode(s.input_ids) == "one two" + EOT
        assert list(s.input_ids).count(tok.eos_token_id) == 1

    def test_text_train_on_is_irrelevant(self, tok):
        ex = Example("text", text="alpha beta")
        [a] = tokenize_examples([ex], tok, max_length=64, train_on="completion")
        [b] = tokenize_examples([ex], tok, max_length=64, train_on="all")
        assert a == b

    def test_empty_text_dropped_no_loss(self, tok):
        stats = TokenizeStats()
        assert tokenize_examples([Example("text", text="")], tok, max_length=64, stats=stats) == []
        assert (stats.rows, stats.kept, stats.dropped_no_loss) == (1, 0, 1)

    def test_prompt_completion_without_chat_template(self, tok):
        tok.chat_template = None
        ex = Example("prompt_completion", prompt="What is 2 plus 3? The answer is", completion=" 5")
        [s] = tokenize_examples([ex], tok, max_length=256)
        assert tok.decode(s.input_ids) == "What is 2 plus 3? The answer is 5" + EOT
        assert loss_runs(tok, s) == [" 5" + EOT]
        [a] = tokenize_examples([ex], tok, max_length=256, train_on="all")
        assert a.input_ids == s.input_ids and a.labels == a.input_ids


# --------------------------------------------------------------------------- length policy and stats


class TestLength:
    TEXT = "one two three four five six seven eight nine ten"

    def full(self, tok):
        return tokenize_examples([Example("text", text=self.TEXT)], tok, max_length=10_000)[0]

    def test_truncate(self, tok):
        full = self.full(tok)
        assert len(full) > 8
        stats = TokenizeStats()
        [s] = tokenize_examples([Example("text", text=self.TEXT)], tok, max_length=8, too_long="truncate", stats=stats)
        assert s.input_ids == full.input_ids[:8] and s.labels == full.labels[:8]
        assert (stats.rows, stats.kept, stats.truncated, stats.dropped_too_long, stats.tokens) == (1, 1, 1, 0, 8)

    def test_exact_length_is_not_truncated(self, tok):
        n = len(self.full(tok))
        stats = TokenizeStats()
        [s] = tokenize_examples([Example("text", text=self.TEXT)], tok, max_length=n, stats=stats)
        assert len(s) == n and s.input_ids[-1] == tok.eos_token_id
        assert stats.truncated == 0

    def test_drop(self, tok):
        n = len(self.full(tok))
        stats = TokenizeStats()
        exs = [Example("text", text="short"), Example("text", text=self.TEXT), Example("text", text="also short")]
        out = tokenize_examples(exs, tok, max_length=n - 1, too_long="drop", stats=stats)
        assert [tok.decode(s.input_ids) for s in out] == ["short" + EOT, "also short" + EOT]
        assert (stats.rows, stats.kept, stats.dropped_too_long, stats.truncated) == (3, 2, 1, 0)

    def test_truncated_chat_keeps_prefix_mask(self, tok):
        ex = chat(("user", "q"), ("assistant", self.TEXT))
        [full] = tokenize_examples([ex], tok, max_length=10_000)
        [s] = tokenize_examples([ex], tok, max_length=len(full) - 3)
        assert s.input_ids == full.input_ids[: len(full) - 3] and s.labels == full.labels[: len(full) - 3]

    def test_truncation_cutting_all_answer_tokens_drops_row(self, tok):
        ex = chat(("user", self.TEXT), ("assistant", "yes"))
        stats = TokenizeStats()
        assert tokenize_examples([ex], tok, max_length=6, stats=stats) == []
        assert (stats.kept, stats.dropped_no_loss) == (0, 1)

    def test_stats_accumulate_across_sources(self, tok):
        stats = TokenizeStats()
        a = tokenize_examples([Example("text", text="a b"), Example("text", text="c")], tok, 64, source=0, stats=stats)
        b = tokenize_examples([chat(("user", "q"), ("assistant", "x"))], tok, 64, source=3, stats=stats)
        assert [s.source for s in a + b] == [0, 0, 3]
        assert stats.by_source == {0: 2, 3: 1}
        assert (stats.rows, stats.kept) == (3, 3)
        assert stats.tokens == sum(len(s) for s in a + b)
        assert stats.loss_tokens == sum(s.num_loss_tokens for s in a + b)
        assert stats.summary() == (
            f"3/3 rows kept, {stats.tokens} tokens ({stats.loss_tokens} with loss); "
            "truncated 0, dropped 0 too long and 0 with no loss tokens"
        )

    def test_num_loss_tokens_skips_first_token(self):
        s = TokenizedSample((5, 6, 7), (5, IGNORE, 7))
        assert (len(s), s.num_loss_tokens) == (3, 1)


# --------------------------------------------------------------------------- chat templates


class TestEnsureChatTemplate:
    def test_installs_chatml_when_missing(self, tok):
        tok.chat_template = None
        ensure_chat_template(tok)
        assert tok.chat_template == DEFAULT_CHAT_TEMPLATE
        ex = chat(("user", "q"), ("assistant", "a"))
        [s] = tokenize_examples([ex], tok, 64)
        assert tok.decode(s.input_ids) == "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n"
        assert loss_runs(tok, s) == ["a<|im_end|>\n"]

    def test_given_template_overrides(self, tok):
        assert tok.chat_template  # the tiny tokenizer ships ChatML
        ensure_chat_template(tok, PLAIN_TEMPLATE)
        assert tok.chat_template == PLAIN_TEMPLATE

    def test_existing_template_kept(self, tok):
        tok.chat_template = PLAIN_TEMPLATE
        ensure_chat_template(tok)
        assert tok.chat_template == PLAIN_TEMPLATE
        ensure_chat_template(tok, "")
        assert tok.chat_template == PLAIN_TEMPLATE


# --------------------------------------------------------------------------- prepare_data


def write_chat_source(path: Path, n: int, tag: str) -> str:
    rows = [{"messages": [{"role": "user", "content": f"{tag} q{i}"}, {"role": "assistant", "content": f"{tag} a{i}"}]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def answers(tok, samples) -> list[str]:
    return [loss_text(tok, s) for s in samples]


class TestPrepare:
    @pytest.fixture
    def sources(self, tmp_path):
        return [
            DataSource(write_chat_source(tmp_path / "a.jsonl", 10, "alpha")),
            DataSource(write_chat_source(tmp_path / "b.jsonl", 5, "beta")),
        ]

    def test_stacked_no_eval(self, tok, sources):
        data = prepare_data(sources, tok, max_length=128, epochs=2.0)
        assert data.eval == []
        assert [s.source for s in data.train] == [0] * 10 + [1] * 5
        assert answers(tok, data.train)[0] == "alpha a0<|im_end|>\n"
        assert answers(tok, data.train)[10] == "beta a0<|im_end|>\n"
        assert data.phases == [Phase(0, tuple(range(15)), 2.0)]
        assert (data.stats.rows, data.stats.kept, data.stats.by_source) == (15, 15, {0: 10, 1: 5})

    def test_eval_fraction_counts_per_source(self, tok, sources):
        data = prepare_data(sources, tok, max_length=128, eval_fraction=0.2, seed=3)
        # round(10 * 0.2) = 2 from the first source, max(1, round(5 * 0.2)) = 1 from the second
        assert sorted(s.source for s in data.eval) == [0, 0, 1]
        assert sorted(s.source for s in data.train) == [0] * 8 + [1] * 4
        all_answers = {f"alpha a{i}<|im_end|>\n" for i in range(10)} | {f"beta a{i}<|im_end|>\n" for i in range(5)}
        assert set(answers(tok, data.train)) | set(answers(tok, data.eval)) == all_answers
        assert not set(answers(tok, data.train)) & set(answers(tok, data.eval))
        assert data.phases == [Phase(0, tuple(range(12)), 1.0)]

    def test_eval_split_is_deterministic(self, tok, sources):
        a = prepare_data(sources, tok, max_length=128, eval_fraction=0.3, seed=7)
        b = prepare_data(sources, tok, max_length=128, eval_fraction=0.3, seed=7)
        assert a.train == b.train and a.eval == b.eval
        assert len(a.eval) == 3 + 2  # round(3.0), round(1.5) == 2
        others = [prepare_data(sources, tok, max_length=128, eval_fraction=0.3, seed=s).eval for s in range(8, 12)]
        assert any(answers(tok, o) != answers(tok, a.eval) for o in others), "the seed must change the split"

    def test_eval_fraction_bounds(self, tok, tmp_path):
        one = DataSource(write_chat_source(tmp_path / "one.jsonl", 1, "solo"))
        four = DataSource(write_chat_source(tmp_path / "four.jsonl", 4, "quad"))
        tiny = prepare_data([one, four], tok, max_length=128, eval_fraction=0.01)
        assert sorted(s.source for s in tiny.eval) == [1]  # a single row is never held out; at least one otherwise
        most = prepare_data([four], tok, max_length=128, eval_fraction=1.0)
        assert (len(most.train), len(most.eval)) == (1, 3)  # at least one row is left to train on

    def test_phased_groups_by_phase_in_order(self, tok, tmp_path):
        srcs = [
            DataSource(write_chat_source(tmp_path / "a.jsonl", 3, "alpha"), phase=2),
            DataSource(write_chat_source(tmp_path / "b.jsonl", 2, "beta"), phase=1, epochs=3.0),
            DataSource(write_chat_source(tmp_path / "c.jsonl", 4, "gamma"), phase=2),
        ]
        data = prepare_data(srcs, tok, max_length=128, strategy="phased", epochs=1.5)
        assert [s.source for s in data.train] == [0] * 3 + [1] * 2 + [2] * 4
        assert data.phases == [
            Phase(1, (3, 4), 3.0),
            Phase(2, (0, 1, 2, 5, 6, 7, 8), 1.5),
        ]

    def test_phased_with_eval_indices_point_into_train(self, tok, tmp_path):
        srcs = [
            DataSource(write_chat_source(tmp_path / "a.jsonl", 10, "alpha"), phase=1),
            DataSource(write_chat_source(tmp_path / "b.jsonl", 10, "beta"), phase=0, epochs=2.0),
        ]
        data = prepare_data(srcs, tok, max_length=128, strategy="phased", eval_fraction=0.2)
        assert [p.number for p in data.phases] == [0, 1]
        assert [p.epochs for p in data.phases] == [2.0, 1.0]
        assert [data.train[i].source for i in data.phases[0].indices] == [1] * 8
        assert [data.train[i].source for i in data.phases[1].indices] == [0] * 8
        assert sorted(i for p in data.phases for i in p.indices) == list(range(len(data.train)))

    def test_phased_same_epochs_in_phase_ok(self, tok, tmp_path):
        srcs = [
            DataSource(write_chat_source(tmp_path / "a.jsonl", 2, "alpha"), phase=1, epochs=2.0),
            DataSource(write_chat_source(tmp_path / "b.jsonl", 2, "beta"), phase=1, epochs=2.0),
            DataSource(write_chat_source(tmp_path / "c.jsonl", 2, "gamma"), phase=1),
        ]
        data = prepare_data(srcs, tok, max_length=128, strategy="phased")
        assert data.phases == [Phase(1, (0, 1, 2, 3, 4, 5), 2.0)]

    def test_phased_conflicting_epochs_raise(self, tok, tmp_path):
        srcs = [
            DataSource(write_chat_source(tmp_path / "a.jsonl", 2, "alpha"), phase=1, epochs=1.0),
            DataSource(write_chat_source(tmp_path / "b.jsonl", 2, "beta"), phase=2, epochs=5.0),
            DataSource(write_chat_source(tmp_path / "c.jsonl", 2, "gamma"), phase=1, epochs=2.0),
        ]
        with pytest.raises(DataError, match=r"^phase 1: its data entries give different `epochs`$"):
            prepare_data(srcs, tok, max_length=128, strategy="phased")

    def test_phased_source_without_phase_goes_to_phase_0(self, tok, tmp_path):
        srcs = [
            DataSource(write_chat_source(tmp_path / "a.jsonl", 2, "alpha"), phase=1),
            DataSource(write_chat_source(tmp_path / "b.jsonl", 2, "beta")),
        ]
        data = prepare_data(srcs, tok, max_length=128, strategy="phased")
        assert data.phases == [Phase(0, (2, 3), 1.0), Phase(1, (0, 1), 1.0)]

    def test_stacked_ignores_phases_and_source_epochs(self, tok, tmp_path):
        srcs = [
            DataSource(write_chat_source(tmp_path / "a.jsonl", 2, "alpha"), phase=2, epochs=4.0),
            DataSource(write_chat_source(tmp_path / "b.jsonl", 2, "beta"), phase=1, epochs=9.0),
        ]
        data = prepare_data(srcs, tok, max_length=128, strategy="stacked", epochs=1.0)
        assert data.phases == [Phase(0, (0, 1, 2, 3), 1.0)]

    def test_installs_chatml_for_chat_data(self, tok, sources):
        tok.chat_template = None
        data = prepare_data(sources, tok, max_length=128)
        assert tok.chat_template == DEFAULT_CHAT_TEMPLATE
        assert answers(tok, data.train)[0] == "alpha a0<|im_end|>\n"

    def test_chat_template_argument(self, tok, sources):
        data = prepare_data(sources, tok, max_length=128, chat_template=PLAIN_TEMPLATE)
        assert tok.decode(data.train[0].input_ids) == "user: alpha q0\nassistant: alpha a0\n"
        assert answers(tok, data.train)[0] == " alpha a0\n"  # " alpha" is one token straddling the prompt

    def test_no_sources(self, tok):
        with pytest.raises(DataError, match="no training data"):
            prepare_data([], tok, max_length=128)

    def test_source_with_no_usable_rows(self, tok, tmp_path):
        path = tmp_path / "noans.jsonl"
        path.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n", encoding="utf-8")
        good = DataSource(write_chat_source(tmp_path / "a.jsonl", 2, "alpha"))
        with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: no usable rows after tokenisation \(2/3 rows kept"):
            prepare_data([good, DataSource(str(path))], tok, max_length=128)

    def test_malformed_source_names_line(self, tok, tmp_path):
        path = tmp_path / "bad.jsonl"
        path.write_text('{"text": "a"}\n{"prompt": "b"}\n', encoding="utf-8")
        with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: has `prompt` but no `completion`"):
            prepare_data([DataSource(str(path))], tok, max_length=128)


# --------------------------------------------------------------------------- TRL conversational rows


def trl_split(tok, prompt: list[dict], completion: list[dict]) -> tuple[str, str]:
    """Prompt and completion text the way TRL's ``apply_chat_template`` cuts them."""
    if prompt[-1]["role"] == "assistant":
        head = tok.apply_chat_template(prompt, tokenize=False, continue_final_message=True)
    else:
        head = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(prompt + completion, tokenize=False)
    assert full.startswith(head)
    return head, full[len(head):]


class TestConversationalPromptCompletion:
    PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 plus 3?"}]

    @pytest.mark.parametrize("completion", [
        [{"role": "assistant", "content": "5"}],
        # TRL puts loss on the whole completion, whatever its roles
        [{"role": "assistant", "content": "calling"}, {"role": "tool", "content": "{}"},
         {"role": "assistant", "content": "5"}],
    ])
    def test_loss_on_the_completion_exactly_as_trl_renders_it(self, tok, tmp_path, completion):
        ensure_chat_template(tok)
        path = tmp_path / "trl.jsonl"
        path.write_text(json.dumps({"prompt": self.PROMPT, "completion": completion}) + "\n")
        from tunescout.data.formats import read_examples

        [ex] = read_examples(str(path))
        [s] = tokenize_examples([ex], tok, max_length=512)
        head, tail = trl_split(tok, self.PROMPT, completion)
        assert tok.decode(s.input_ids) == head + tail
        assert loss_text(tok, s) == tail and masked_text(tok, s) == head
        [every] = tokenize_examples([ex], tok, max_length=512, train_on="all")
        assert every.input_ids == s.input_ids and IGNORE not in every.labels

    def test_prompt_ending_with_assistant_is_continued(self, tok):
        ensure_chat_template(tok)
        prompt = [*self.PROMPT, {"role": "assistant", "content": "The answer"}]
        completion = [{"role": "assistant", "content": " is 5"}]
        ex = Example("messages", messages=tuple(prompt + completion), completion_from=3, where="t.jsonl:2")
        [s] = tokenize_examples([ex], tok, max_length=512)
        head, tail = trl_split(tok, prompt, completion)
        assert loss_text(tok, s) == tail and masked_text(tok, s) == head

    def test_single_turn_matches_an_ordinary_chat(self, tok):
        ensure_chat_template(tok)
        completion = [{"role": "assistant", "content": "5"}]
        trl = Example("messages", messages=tuple(self.PROMPT + completion), completion_from=2, where="w")
        plain = Example("messages", messages=tuple(self.PROMPT + completion), where="w")
        assert tokenize_examples([trl], tok, 512) == tokenize_examples([plain], tok, 512)

    def test_prompt_only_row_refused_for_training_naming_it(self, tok):
        ensure_chat_template(tok)
        ex = Example("messages", messages=tuple(self.PROMPT), completion_from=2, where="p.jsonl:4")
        with pytest.raises(DataError, match=r"^p\.jsonl:4: a prompt-only row .* evaluation prompts"):
            tokenize_examples([ex], tok, max_length=512)

    def test_prepare_data_trains_on_trl_rows(self, tok, tmp_path):
        path = tmp_path / "trl.jsonl"
        rows = [{"prompt": [{"role": "user", "content": f"q{i}"}], "completion": [{"role": "assistant", "content": f"a{i}"}]}
                for i in range(3)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        data = prepare_data([DataSource(str(path))], tok, max_length=128)  # installs ChatML: rows are chats
        assert [loss_text(tok, s) for s in data.train] == [f"a{i}<|im_end|>\n" for i in range(3)]
