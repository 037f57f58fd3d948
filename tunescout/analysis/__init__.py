"""Analysis of study results: pure functions over pandas tables (see ``table`` for the contract)."""

from tunescout.analysis.cbs import (
    best_on_average_order, cbs_rank, format_loo_summary, format_rankings, leave_one_out, loo_summary,
    multiple_defaults, rank_results, ranking_to_json, rankings_to_json, relative_scores, split_groups,
)
from tunescout.analysis.table import config_id_of, load_results, results_from_store, validate_results

__all__ = [
    "best_on_average_order", "cbs_rank", "config_id_of", "format_loo_summary", "format_rankings", "leave_one_out",
    "load_results", "loo_summary", "multiple_defaults", "rank_results", "ranking_to_json", "rankings_to_json",
    "relative_scores", "results_from_store", "split_groups", "validate_results",
]
