"""The promotion gate: is the candidate better than the champion on the same data, beyond the noise?

Both models are scored now, on the same eval split (test where the data has one), each through its own packed
preprocessing. Per-image
scores (IoU per image for segmentation, correct/incorrect for classification) are paired by image; a paired
bootstrap of the mean difference gives a confidence interval. The candidate is promoted only when the interval's
lower bound exceeds ``min_delta`` and no class's IoU (classification: recall) drops by more than
``max_class_drop``. Pure functions over arrays; the register stage and the CLI do the I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from visionflow.errors import RegistryError
from visionflow.handoffs import GateResult
from visionflow.metrics import class_rates, confusion_matrix, image_scores

__all__ = ["Scores", "decide", "paired_bootstrap", "score_predictions"]


@dataclass(frozen=True)
class Scores:
    """One model on one eval split."""

    per_image: np.ndarray  # (images,) per-image IoU or correctness; NaN where undefined
    per_class: np.ndarray  # (classes,) IoU (segmentation) or recall (classification); NaN for absent classes
    confusion: np.ndarray


def score_predictions(
    predictions: Sequence[np.ndarray],
    truths: Sequence[np.ndarray | int],
    task: str,
    num_classes: int,
    ignore_index: int,
) -> Scores:
    """Per-image and per-class scores of predictions (masks, or class-probability vectors) against the truth."""
    if task == "classification":
        predicted = torch.tensor([int(np.argmax(p)) for p in predictions])
        truth = torch.tensor([int(t) for t in truths])
        confusion = confusion_matrix(predicted, truth, num_classes, ignore_index).numpy()
        per_image = (predicted == truth).double().numpy()
        return Scores(per_image, class_rates(confusion)["recall"], confusion)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    per_image = []
    for pred, truth in zip(predictions, truths, strict=True):
        p, t = (torch.from_numpy(np.asarray(a).astype(np.int64)) for a in (pred, truth))
        image = confusion_matrix(p, t, num_classes, ignore_index).numpy()
        confusion += image
        per_image.append(image_scores(image)["miou"])
    return Scores(np.array(per_image, dtype=np.float64), class_rates(confusion)["iou"], confusion)


def paired_bootstrap(
    differences: np.ndarray, resamples: int, confidence: float, seed: int
) -> tuple[float, float, float]:
    """(mean, low, high): percentile interval of the mean paired difference over image resamples."""
    rng = np.random.default_rng(seed)
    n = len(differences)
    means = np.empty(resamples)
    for start in range(0, resamples, 500):  # chunks keep memory flat for large eval sets
        stop = min(resamples, start + 500)
        means[start:stop] = differences[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(differences.mean()), float(low), float(high)


def decide(
    candidate: Scores,
    champion: Scores,
    classes: Sequence[str],
    task: str,
    min_delta: float,
    max_class_drop: float,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> GateResult:
    """Promote only on a confident mean gain and no large per-class regression; every reason is recorded."""
    metric = "per-image IoU" if task == "segmentation" else "per-image correctness"
    class_metric = "IoU" if task == "segmentation" else "recall"
    paired = ~(np.isnan(candidate.per_image) | np.isnan(champion.per_image))
    diff = candidate.per_image[paired] - champion.per_image[paired]
    if len(diff) == 0:
        raise RegistryError("no image has a score for both models; cannot compare them")
    mean, low, high = paired_bootstrap(diff, resamples, confidence, seed)
    reasons = []
    promote = True
    if low > min_delta:
        reasons.append(
            f"{metric}: mean difference {mean:+.4f}, {confidence:.0%} CI [{low:+.4f}, {high:+.4f}] "
            f"lies above min_delta {min_delta:+.4f}"
        )
    else:
        promote = False
        reasons.append(
            f"{metric}: mean difference {mean:+.4f}, {confidence:.0%} CI [{low:+.4f}, {high:+.4f}]: lower bound "
            f"not above min_delta {min_delta:+.4f}"
        )
    changes = {
        name: float(c - h)
        for name, c, h in zip(classes, candidate.per_class, champion.per_class, strict=True)
        if not (np.isnan(c) or np.isnan(h))
    }
    drops = {name: change for name, change in changes.items() if change < -max_class_drop}
    if drops:
        promote = False
        listed = ", ".join(f"{name} {change:+.4f}" for name, change in sorted(drops.items(), key=lambda kv: kv[1]))
        reasons.append(f"class {class_metric} drops beyond max_class_drop {max_class_drop}: {listed}")
    elif changes:
        worst = min(changes, key=changes.get)  # type: ignore[arg-type]
        reasons.append(
            f"no class {class_metric} drops more than {max_class_drop} (worst: {worst} {changes[worst]:+.4f})"
        )
    return GateResult(
        promote,
        tuple(reasons),
        metric,
        int(paired.sum()),
        float(np.nanmean(candidate.per_image)),
        float(np.nanmean(champion.per_image)),
        mean,
        low,
        high,
        confidence,
        {k: round(v, 6) for k, v in changes.items()},
    )
