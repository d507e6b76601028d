"""The promotion gate's statistics: a paired bootstrap on per-image scores plus a per-class regression check."""

from __future__ import annotations

import numpy as np
import pytest

from visionflow.gate import Scores, decide, paired_bootstrap, score_predictions

CLASSES = ("background", "road", "sign")


def scores(per_image: np.ndarray, per_class: list[float]) -> Scores:
    return Scores(per_image, np.array(per_class), np.eye(3))


def test_paired_bootstrap_interval_brackets_the_mean_and_narrows_with_more_images() -> None:
    rng = np.random.default_rng(0)
    small = rng.normal(0.02, 0.05, size=20)
    large = rng.normal(0.02, 0.05, size=2000)
    mean, low, high = paired_bootstrap(small, 2000, 0.95, seed=1)
    assert low < mean < high
    _, low_large, high_large = paired_bootstrap(large, 2000, 0.95, seed=1)
    assert high_large - low_large < (high - low) / 4
    assert low_large > 0, "2000 images resolve a +0.02 gain"


def test_worse_candidate_is_not_promoted_and_says_why() -> None:
    rng = np.random.default_rng(1)
    champion = rng.uniform(0.4, 0.8, size=60)
    candidate = champion - 0.05 + rng.normal(0, 0.02, size=60)
    result = decide(scores(candidate, [0.9, 0.8, 0.5]), scores(champion, [0.9, 0.8, 0.5]), CLASSES, "segmentation",
                    min_delta=0.0, max_class_drop=0.05)  # fmt: skip
    assert not result.promote and result.ci_high < 0
    assert "lower bound not above min_delta" in result.reasons[0]


def test_clearly_better_candidate_is_promoted() -> None:
    rng = np.random.default_rng(2)
    champion = rng.uniform(0.4, 0.8, size=60)
    candidate = champion + 0.05 + rng.normal(0, 0.02, size=60)
    result = decide(scores(candidate, [0.92, 0.84, 0.55]), scores(champion, [0.9, 0.8, 0.5]), CLASSES,
                    "segmentation", min_delta=0.0, max_class_drop=0.05)  # fmt: skip
    assert result.promote and result.ci_low > 0 and result.images == 60


def test_better_mean_but_one_class_collapsing_is_not_promoted() -> None:
    rng = np.random.default_rng(3)
    champion = rng.uniform(0.4, 0.8, size=60)
    candidate = champion + 0.05
    result = decide(scores(candidate, [0.95, 0.9, 0.3]), scores(champion, [0.9, 0.8, 0.5]), CLASSES, "segmentation",
                    min_delta=0.0, max_class_drop=0.05)  # fmt: skip
    assert result.ci_low > 0, "the mean did improve"
    assert not result.promote
    assert "sign -0.2000" in result.reasons[-1] and result.class_changes["sign"] == pytest.approx(-0.2)


def test_min_delta_raises_the_bar() -> None:
    champion = np.linspace(0.3, 0.7, 80)
    candidate = champion + 0.01
    gate = {"classes": CLASSES, "task": "segmentation", "max_class_drop": 0.05}
    assert decide(scores(candidate, [1, 1, 1]), scores(champion, [1, 1, 1]), min_delta=0.0, **gate).promote
    assert not decide(scores(candidate, [1, 1, 1]), scores(champion, [1, 1, 1]), min_delta=0.02, **gate).promote


def test_images_without_a_score_are_left_out_of_the_pairing() -> None:
    champion = np.array([0.5, np.nan, 0.5, 0.5])
    candidate = np.array([0.9, 0.9, np.nan, 0.9])
    result = decide(scores(candidate, [1, 1, 1]), scores(champion, [1, 1, 1]), CLASSES, "segmentation", 0.0, 0.05)
    assert result.images == 2


def test_scoring_predictions_for_both_tasks() -> None:
    truth = np.array([[0, 1], [1, 255]])
    seg = score_predictions([truth.copy(), np.zeros((2, 2))], [truth, truth], "segmentation", 2, 255)
    assert seg.per_image[0] == 1.0 and seg.per_image[1] < 1.0
    assert seg.confusion.sum() == 6, "ignored pixels are not scored"
    probabilities = [np.array([0.9, 0.1]), np.array([0.2, 0.8]), np.array([0.6, 0.4])]
    cls = score_predictions(probabilities, [0, 1, 1], "classification", 2, -100)
    assert cls.per_image.tolist() == [1.0, 1.0, 0.0]
    assert cls.per_class.tolist() == [1.0, 0.5], "per-class recall"
