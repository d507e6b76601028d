from __future__ import annotations

import numpy as np
import pytest

from visionflow.balance import class_frequencies, class_weights, presence, repeat_factors, sampled_shares

# three images of 100 labelled pixels; class 2 appears only in the last one
COUNTS = np.array([[90, 10, 0], [80, 20, 0], [50, 30, 20]])
PIXELS = COUNTS.sum(axis=1)


def test_frequency_counts_only_images_holding_the_class() -> None:
    freq = class_frequencies(COUNTS, PIXELS)
    assert np.allclose(freq, [220 / 300, 60 / 300, 20 / 100])


def test_median_frequency_by_hand() -> None:
    freq = np.array([220 / 300, 60 / 300, 20 / 100])
    raw = np.median(freq) / freq
    weights = class_weights(COUNTS, PIXELS, "median_frequency")
    assert np.allclose(weights, raw / raw.mean())
    assert weights[0] < weights[1] and weights[0] < weights[2], "the frequent class weighs least"


@pytest.mark.parametrize("method", ["inverse", "inverse_sqrt", "median_frequency", "effective_number"])
def test_weights_have_mean_one_and_favour_rare_classes(method: str) -> None:
    weights = class_weights(COUNTS, PIXELS, method, beta=0.99)
    assert np.isclose(weights.mean(), 1.0)
    assert weights[0] == weights.min()


def test_absent_class_gets_zero_and_clip_caps() -> None:
    counts = np.array([[1000, 1, 0], [1000, 0, 0]])
    weights = class_weights(counts, counts.sum(axis=1), "inverse", clip=1.5)
    assert weights[2] == 0.0
    assert weights.max() == 1.5


def test_none_is_uniform_and_unknown_method_lists_choices() -> None:
    assert np.array_equal(class_weights(COUNTS, PIXELS, "none"), np.ones(3))
    with pytest.raises(ValueError, match="median_frequency"):
        class_weights(COUNTS, PIXELS, "magic")


def test_presence_needs_the_minimum_share() -> None:
    counts = np.array([[990, 10, 0], [500, 500, 0]])
    assert presence(counts, 0.0).tolist() == [[True, True, False], [True, True, False]]
    assert presence(counts, 0.05).tolist() == [[True, False, False], [True, True, False]]


def test_repeat_factors_by_hand() -> None:
    # class 0 in all 4 images, class 1 in one (f = 0.25), class 2 in none
    present = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]], dtype=bool)
    factors = repeat_factors(present, threshold=0.5)
    assert np.allclose(factors, [np.sqrt(0.5 / 0.25), 1.0, 1.0, 1.0])
    assert np.allclose(repeat_factors(present, threshold=0.1), 1.0), "no class below t: no repeats"


def test_sampled_shares_follow_the_factors() -> None:
    counts = np.array([[90, 10], [100, 0]])
    present = counts > 0
    pixels, images = sampled_shares(counts, present, np.array([1.0, 1.0]))
    assert np.allclose(pixels, [190 / 200, 10 / 200]) and np.allclose(images, [1.0, 0.5])
    pixels, images = sampled_shares(counts, present, np.array([3.0, 1.0]))
    assert np.allclose(images, [1.0, 0.75]) and pixels[1] > 10 / 200


def test_classification_weights_follow_image_counts() -> None:
    """One-hot rows (one count per image): the rare class gets the larger weight."""
    one_hot = np.array([[1, 0]] * 6 + [[0, 1]] * 2)
    weights = class_weights(one_hot, one_hot.sum(axis=1), "inverse", per_image=True)
    assert weights[1] / weights[0] == pytest.approx(3.0)
    assert np.allclose(class_weights(one_hot, one_hot.sum(axis=1), "inverse"), 1.0), "pixel rule: no signal"
