"""Evaluation metrics as pure functions over predictions and labels."""

from .long_tail import (
    SHOT_GROUPS,
    THIRDS,
    count_thirds,
    format_report,
    long_tail_metrics,
    long_tail_report,
    per_class_accuracy,
    shot_groups,
)

__all__ = [
    "SHOT_GROUPS",
    "THIRDS",
    "count_thirds",
    "format_report",
    "long_tail_metrics",
    "long_tail_report",
    "per_class_accuracy",
    "shot_groups",
]
