"""Random tokenized samples for the numerical tests: loss on a random tail, like a completion."""

from __future__ import annotations

import random

from tunescout.data.tokenize import IGNORE, TokenizedSample


def random_samples(n: int, vocab: int, seed: int = 0, max_len: int = 60, min_len: int = 4) -> list[TokenizedSample]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(min_len, max_len)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        prompt = rng.randint(1, length - 2)
        out.append(TokenizedSample(tuple(ids), tuple([IGNORE] * prompt + ids[prompt:])))
    return out
