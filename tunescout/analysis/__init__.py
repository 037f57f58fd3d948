"""Analysis of study results: pure functions over pandas tables (see ``table`` for the contract)."""

from tunescout.analysis.cbs import (
    best_on_average_order, cbs_rank, format_loo_summary, format_rankings, leave_one_out, loo_summary,
    multiple_defaults, rank_results, ranking_to_json, rankings_to_json, relative_scores, split_groups,
)
from tunescout.analysis.table import config_id_of, load_results, nested_hparams, results_from_store, validate_results
from tunescout.analysis.compare import BatchLrTables, batch_lr_table, stacked_vs_phased
from tunescout.analysis.dynamics import (bootstrap_ci, dynamics_correlations, early_signals, final_scores,
                                         signal_directions, signals_advice, spearman, suggest_signals)
from tunescout.analysis.promotion import promotion_agreement
from tunescout.analysis.replay import StoppingReplay, default_replay_rules, replay_stopping, rule_label

__all__ = [
    "BatchLrTables", "StoppingReplay", "batch_lr_table", "best_on_average_order", "bootstrap_ci", "cbs_rank",
    "config_id_of", "default_replay_rules", "dynamics_correlations", "early_signals", "final_scores",
    "format_loo_summary", "format_rankings", "leave_one_out", "load_results", "loo_summary", "multiple_defaults", "nested_hparams", "promotion_agreement",
    "rank_results", "ranking_to_json", "rankings_to_json", "relative_scores", "replay_stopping",
    "results_from_store", "rule_label", "signal_directions", "signals_advice", "spearman", "split_groups", "stacked_vs_phased",
    "suggest_signals", "validate_results",
]
