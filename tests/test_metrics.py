"""Long-tail accuracy groups on the Fashion-MNIST-LT counts, worked out by hand."""

import numpy as np
import pytest

from livt_hf.data import exponential_counts
from livt_hf.metrics import count_thirds, format_report, long_tail_metrics, long_tail_report, shot_groups

FMNIST_LT = exponential_counts(5000, 10, 100)  # 5000 2997 1796 1077 645 387 232 139 83 50


def test_shot_groups_on_fashion_mnist_lt():
    groups = shot_groups(FMNIST_LT)
    assert groups == {"many": list(range(8)), "medium": [8, 9], "few": []}
    assert shot_groups(FMNIST_LT, many_threshold=500, few_threshold=100) == {
        "many": [0, 1, 2, 3, 4], "medium": [5, 6, 7], "few": [8, 9]}
    with pytest.raises(ValueError, match="must not exceed"):
        shot_groups(FMNIST_LT, many_threshold=10, few_threshold=20)


def test_thirds_rank_by_count():
    assert count_thirds(FMNIST_LT) == {"head": [0, 1, 2, 3], "middle": [4, 5, 6], "tail": [7, 8, 9]}
    assert count_thirds([5, 50, 500]) == {"head": [2], "middle": [1], "tail": [0]}


def test_group_accuracy_is_the_mean_of_class_accuracies_and_empty_groups_are_absent():
    labels = np.repeat(np.arange(10), 10)
    predictions = labels.copy()
    predictions[labels == 9] = 0  # class 9 all wrong
    predictions[np.flatnonzero(labels == 8)[:5]] = 0  # class 8 half wrong
    metrics = long_tail_metrics(predictions, labels, FMNIST_LT)
    assert metrics["accuracy"] == pytest.approx(85 / 100)
    assert metrics["many_accuracy"] == 1.0
    assert metrics["medium_accuracy"] == pytest.approx((0.5 + 0.0) / 2)
    assert metrics["tail_accuracy"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert "few_accuracy" not in metrics  # no class has < 20 images: empty, not 0 or NaN


def test_report_table_marks_empty_groups():
    labels = np.repeat(np.arange(10), 3)
    report = long_tail_report(labels, labels, FMNIST_LT, [f"c{i}" for i in range(10)])
    table = format_report(report)
    assert "| few (train count < 20) | 0 | — (no class in this group) |" in table
    assert "| overall | all 10 | 100.00 |" in table
    assert "| 9 | c9 | 50 | 3 | 100.00 |" in table
    assert all(np.isfinite(v) for v in report["metrics"].values())
    report["calibration"] = {"raw": {"ece": 0.0123, "brier": 0.5}, "T = 2": {"ece": 0.01, "brier": 0.4}}
    assert "| probabilities | ECE | BRIER |\n|---|---|---|\n| raw | 0.0123 | 0.5000 |\n| T = 2 | 0.0100 | 0.4000 |" in (
        format_report(report))


def test_local_evaluate_module_loads_offline_and_agrees():
    import evaluate

    from livt_hf.metrics import LONG_TAIL_ACCURACY

    metric = evaluate.load(LONG_TAIL_ACCURACY)
    labels = np.repeat(np.arange(10), 4)
    predictions = np.where(labels >= 8, 0, labels)  # medium classes 8, 9 all wrong
    result = metric.compute(predictions=predictions, references=labels, train_counts=FMNIST_LT)
    assert result == long_tail_metrics(predictions, labels, FMNIST_LT)
    assert result["medium_accuracy"] == 0.0 and result["many_accuracy"] == 1.0 and result["accuracy"] == 0.8
