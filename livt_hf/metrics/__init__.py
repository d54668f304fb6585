"""Evaluation metrics as pure functions over predictions and labels, and as local `evaluate` modules."""

from pathlib import Path

from .calibration import calibration_metrics, fit_temperature, probabilities_from_logits
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

# Path of the `evaluate` module: evaluate.load(LONG_TAIL_ACCURACY) works offline.
LONG_TAIL_ACCURACY = str(Path(__file__).parent / "long_tail_accuracy" / "long_tail_accuracy.py")
CALIBRATION_ERROR = str(Path(__file__).parent / "calibration_error" / "calibration_error.py")

__all__ = [
    "CALIBRATION_ERROR",
    "LONG_TAIL_ACCURACY",
    "SHOT_GROUPS",
    "THIRDS",
    "calibration_metrics",
    "count_thirds",
    "fit_temperature",
    "format_report",
    "long_tail_metrics",
    "long_tail_report",
    "per_class_accuracy",
    "probabilities_from_logits",
    "shot_groups",
]
