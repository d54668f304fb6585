"""`evaluate` module for long-tail accuracy, loadable offline by path:

    evaluate.load(livt_hf.metrics.LONG_TAIL_ACCURACY)
    metric.compute(predictions=…, references=…, train_counts=[…], many_threshold=100, few_threshold=20)

Returns `accuracy` and `<group>_accuracy` for the non-empty many / medium / few and head / middle / tail groups.
"""

import datasets
import evaluate

from livt_hf.metrics.long_tail import long_tail_metrics


class LongTailAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="predictions and references: class ids; train_counts: training images per class.",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, train_counts, many_threshold=100, few_threshold=20):
        return long_tail_metrics(predictions, references, train_counts, many_threshold, few_threshold)
