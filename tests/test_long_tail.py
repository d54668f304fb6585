"""Long-tailed split geometry (LiVT Table 8), the validation carve, and the errors for bad split settings."""

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from livt_hf.data import balanced_counts, build_long_tail_splits, exponential_counts, pareto_counts
from livt_hf.data.long_tail import resample_indices, resampled_test_counts


@pytest.mark.parametrize(
    "num_classes, n_max, rho, total, n_min",
    [(10, 5000, 100, 12406, 50), (10, 5000, 10, 20431, 500), (100, 500, 100, 10847, 5), (100, 500, 10, 19573, 50)],
)
def test_exponential_profile_matches_livt_table_8(num_classes, n_max, rho, total, n_min):
    counts = exponential_counts(n_max, num_classes, rho)
    assert sum(counts) == total
    assert counts[0] == n_max and counts[-1] == n_min
    assert counts == sorted(counts, reverse=True)


def test_fashion_mnist_lt_counts_equal_cifar10_lt():
    # n_i = floor(5000 · 100^(-i/9)) worked out by hand for i = 1 and i = 8: 5000/1.6681 = 2997.4, 5000/59.948 = 83.4
    counts = exponential_counts(5000, 10, 100)
    assert counts[:2] == [5000, 2997] and counts[-2:] == [83, 50]


def test_pareto_profile_hits_both_ends_with_a_heavy_tail():
    counts = pareto_counts(1280, 1000, 256)  # ImageNet-LT's head and ρ
    assert counts[0] == 1280 and counts[-1] == 5
    assert counts == sorted(counts, reverse=True)
    # power law: most classes sit in the tail, unlike the exponential profile's even spread in log-space
    assert np.median(counts) < 20


def test_balanced_counts_keep_the_total():
    assert balanced_counts(12406, 10) == [1241] * 6 + [1240] * 4
    assert sum(balanced_counts(12406, 10)) == 12406


def test_fashion_mnist_lt_split(fashion_mnist):
    splits, info = build_long_tail_splits(fashion_mnist, imbalance_ratio=100, seed=0)
    assert info.train_counts == exponential_counts(5000, 10, 100)
    assert sum(info.train_counts) == len(splits["train"]) == 12406
    assert info.validation_counts == [100] * 10  # round(0.02 · 5000), balanced
    assert set(info.train_indices).isdisjoint(info.validation_indices)
    assert info.test_counts == [1000] * 10  # the untouched Fashion-MNIST test split
    assert splits["train"].features["label"].names[0] == "T-shirt/top"
    # every class keeps ≥ 1000 source images out of the train split (n_max = 5000 of 6000)
    labels = np.asarray(fashion_mnist["train"]["label"])
    unused = np.bincount(np.delete(labels, info.train_indices), minlength=10)
    assert unused.min() >= 1000


def test_split_is_seeded_and_validation_is_independent_of_rho(fashion_mnist):
    _, a = build_long_tail_splits(fashion_mnist, imbalance_ratio=100, seed=3)
    _, b = build_long_tail_splits(fashion_mnist, imbalance_ratio=100, seed=3)
    _, c = build_long_tail_splits(fashion_mnist, imbalance_ratio=10, seed=3)
    _, d = build_long_tail_splits(fashion_mnist, imbalance_ratio=100, seed=4)
    assert a.train_indices == b.train_indices and a.validation_indices == b.validation_indices
    assert a.validation_indices == c.validation_indices  # same images to select models on for every ρ
    assert set(a.train_indices) < set(c.train_indices)  # ρ = 100 keeps a subset of the ρ = 10 images
    assert a.train_indices != d.train_indices


def test_balanced_split_has_the_lt_split_size(fashion_mnist):
    _, info = build_long_tail_splits(fashion_mnist, imbalance_ratio=100, balanced=True)
    assert sum(info.train_counts) == 12406 and max(info.train_counts) - min(info.train_counts) <= 1


def _toy(counts, with_validation=False):
    features = Features({"image": Value("int32"), "label": ClassLabel(names=[f"c{i}" for i in range(len(counts))])})
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    ds = Dataset.from_dict({"image": list(range(len(labels))), "label": labels}, features=features)
    test = Dataset.from_dict({"image": [0, 1, 2], "label": [0, 1, 2]}, features=features)
    return DatasetDict({"train": ds, "test": test} | ({"validation": test} if with_validation else {}))


def test_natural_long_tail_gets_a_stratified_carve_that_keeps_a_train_image():
    splits, info = build_long_tail_splits(_toy([50, 10, 2]), profile="none", validation_split=0.5)
    assert info.validation_counts == [25, 5, 1]
    assert info.train_counts == [25, 5, 1]
    _, info = build_long_tail_splits(_toy([50, 10, 1]), profile="none", validation_split=0.5)
    assert info.train_counts[2] == 1 and info.validation_counts[2] == 0


def test_default_validation_reaches_500_images_where_the_data_allows(fashion_mnist):
    # small subsample: round(0.02 · 400) = 8 per class would choose epochs on 80 images; the default takes 500 / 10
    _, small = build_long_tail_splits(fashion_mnist, imbalance_ratio=50, max_per_class=400)
    _, given = build_long_tail_splits(fashion_mnist, imbalance_ratio=50, max_per_class=400, validation_split=0.02)
    assert small.validation_counts == [50] * 10 and given.validation_counts == [8] * 10
    assert small.train_indices == given.train_indices  # validation comes from left-out images: train is unchanged
    # as many as every class has left over: n = 20, 14, 10 of 30 each → 10 spare; 0.02 · 20 alone would give 1
    _, spare = build_long_tail_splits(_toy([30, 30, 30]), imbalance_ratio=2, max_per_class=20)
    assert spare.train_counts == [20, 14, 10] and spare.validation_counts == [10, 10, 10]
    # a carve (profile "none") of 1,000 images: 500 / 1000 capped at 0.1 of each class; of 26,000: 0.02 suffices
    _, carve = build_long_tail_splits(_toy([600, 300, 100]), profile="none")
    assert carve.validation_counts == [60, 30, 10] and carve.train_counts == [540, 270, 90]
    _, large = build_long_tail_splits(_toy([20000, 5000, 1000]), profile="none")
    assert large.validation_counts == [400, 100, 20]


def test_given_validation_split_is_kept():
    splits, info = build_long_tail_splits(_toy([50, 10, 2], with_validation=True), profile="none")
    assert info.validation_source == "given" and len(splits["validation"]) == 3 and info.train_counts == [50, 10, 2]
    with pytest.raises(ValueError, match="own validation split"):
        build_long_tail_splits(_toy([50, 10, 2], with_validation=True), profile="none", validation_split=0.1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(imbalance_ratio=0.5), "imbalance_ratio must be ≥ 1"),
        (dict(max_per_class=7000), "too few images"),
        (dict(max_per_class=50, imbalance_ratio=100), "zero images"),
        (dict(profile="zipf"), "Unknown long-tail profile"),
        (dict(validation_split=1.5), "validation_split must be in"),
    ],
)
def test_bad_split_settings_fail_with_the_fix(fashion_mnist, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_long_tail_splits(fashion_mnist, **kwargs)


def test_class_without_training_images_is_an_error():
    with pytest.raises(ValueError, match="no train images"):
        build_long_tail_splits(_toy([50, 0, 3]), profile="none")


def test_resampled_test_sets_for_table_d2():
    # ⌊1000 · 100^(−i/9)⌋, 100^(1/9) = 1.6681: 1000/1.6681 = 599.5, 1000/2.7826 = 359.4, …, 1000/59.948 = 16.7
    long_tailed = [1000, 599, 359, 215, 129, 77, 46, 27, 16, 10]
    assert resampled_test_counts(1000, 10, 100) == long_tailed  # like train
    assert resampled_test_counts(1000, 10, 0.01) == long_tailed[::-1]  # reversed
    assert resampled_test_counts(1000, 10, 1) == [1000] * 10
    # ρ' = 10: ⌊1000 · 10^(−i/9)⌋ = 1000, 774, 599, 464, 359, 278, 215, 166, 129, 100
    assert sum(resampled_test_counts(1000, 10, 10)) == 4084
    with pytest.raises(ValueError, match="leaves a class empty"):
        resampled_test_counts(50, 10, 100)
    labels = np.repeat(np.arange(3), 5)
    index = resample_indices(labels, [5, 2, 1], seed=1)
    assert np.bincount(labels[index]).tolist() == [5, 2, 1] and index == resample_indices(labels, [5, 2, 1], seed=1)
    with pytest.raises(ValueError, match="has 5 images, 6 were asked for"):
        resample_indices(labels, [6, 1, 1])


def test_lt_split_json_rebuilds_the_same_splits_from_the_source(fashion_mnist, tmp_path):
    from livt_hf.data.long_tail import LongTailSplit

    splits, info = build_long_tail_splits(fashion_mnist, imbalance_ratio=10, max_per_class=30, max_test_samples=40,
                                          seed=5)  # fmt: skip
    info.save(tmp_path / "lt_split.json")
    saved = LongTailSplit.load(tmp_path / "lt_split.json")
    assert saved == info
    for name, source, indices, counts in (
        ("train", "train", saved.train_indices, saved.train_counts),
        ("validation", "train", saved.validation_indices, saved.validation_counts),
        ("test", "test", saved.test_indices, saved.test_counts),
    ):
        rebuilt = fashion_mnist[source].select(indices)
        assert rebuilt["label"] == splits[name]["label"], name
        pixels = [[np.asarray(image).tobytes() for image in split["image"]] for split in (rebuilt, splits[name])]
        assert pixels[0] == pixels[1], name
        assert np.bincount(rebuilt["label"], minlength=10).tolist() == counts, name
