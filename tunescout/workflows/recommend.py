"""``tunescout recommend`` and the candidates of ``tune``: the top of a CBS ranking as train configs.

A ranking orders configuration ids; a user (and ``tune``) needs the settings to train them with.
This is where a ranked row becomes a config, once, for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from tunescout.settings import ConfigError

__all__ = ["Ranked", "recommend_from", "top_configs"]


@dataclass(frozen=True)
class Ranked:
    """One configuration of a ranking, with the settings to train it."""

    rank: int
    config_id: str
    coverage: float
    """Share of datasets covered by this configuration and those ranked above it."""
    config: dict[str, Any]


def top_configs(table: pd.DataFrame, ranking: pd.DataFrame, k: int | None, source: str) -> list[Ranked]:
    """The first ``k`` rows of ``ranking`` (all with None) as train configs, from the ``hp.*``
    columns of ``table`` (the results the ranking was made from).

    Raises:
        ConfigError: a ranked configuration has no ``hp.*`` settings to train it with.
    """
    from tunescout.analysis import nested_hparams

    out = []
    for row in (ranking if k is None else ranking.head(k)).itertuples():
        config = nested_hparams(table[table["config_id"] == row.config_id].iloc[0].to_dict())
        if not config:
            raise ConfigError(f"{source}: config {row.config_id!r} has no hp.* columns to train it with")
        out.append(Ranked(int(row.rank), str(row.config_id), float(row.cumulative_coverage), config))
    return out


def recommend_from(table: pd.DataFrame, source: str, *, tau: float = 0.95, top: int = 3,
                   method: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Ready-to-run configs from a results table: the top ``top`` of each model × method ranking,
    each with a comment line saying where it comes from."""
    from tunescout.analysis import rank_results

    out = []
    for (model, group_method), ranking in rank_results(table, tau=tau, top=top).items():
        if method and group_method != method:
            continue
        group = f" for {model} ({group_method})" if model or group_method else ""
        for ranked in top_configs(table, ranking, top, source):
            config = {"method": group_method, **ranked.config} if group_method else ranked.config
            out.append((f"# rank {ranked.rank}{group}: {ranked.config_id}; the top {ranked.rank} cover "
                        f"{ranked.coverage:.0%} of datasets; from {source}", config))
    return out
