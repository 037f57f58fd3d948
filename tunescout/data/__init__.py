"""Data path: files → normalised examples → tokenized samples → packed micro-batches."""

from tunescout.data.formats import DataError, Example, read_examples
from tunescout.data.packing import MicroBatch, collate_packed, pack_bins, plan_micro_batches
from tunescout.data.phases import Batch, Phase, build_schedule
from tunescout.data.tokenize import TokenizedSample, TokenizeStats, ensure_chat_template, tokenize_examples

__all__ = [
    "Batch", "DataError", "Example", "MicroBatch", "Phase", "TokenizeStats", "TokenizedSample",
    "build_schedule", "collate_packed", "ensure_chat_template", "pack_bins", "plan_micro_batches",
    "read_examples", "tokenize_examples",
]
