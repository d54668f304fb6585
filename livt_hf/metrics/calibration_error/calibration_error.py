"""`evaluate` module for calibration, loadable offline by path:

    evaluate.load(livt_hf.metrics.CALIBRATION_ERROR)
    metric.compute(predictions=probabilities (N, C), references=class ids, num_bins=15, tace_threshold=1e-3)

Returns ECE, MCE, ACE, TACE, SCE, Brier score and NLL (UniMix supplement Eq. D.2–D.6). Pass probabilities from
`livt_hf.metrics.probabilities_from_logits(logits, loss)`.
"""

import datasets
import evaluate
import numpy as np

from livt_hf.metrics.calibration import calibration_metrics


class CalibrationError(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="predictions: class probabilities (N, C); references: class ids (N,).",
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, num_bins=15, tace_threshold=1e-3):
        return calibration_metrics(np.asarray(predictions), np.asarray(references), num_bins, tace_threshold)
