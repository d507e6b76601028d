"""Confusion-matrix metrics. Pure functions over tensors and arrays; results are plain dicts of floats."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "THRESHOLDS",
    "absent_classes",
    "best_threshold",
    "class_rates",
    "classification_metrics",
    "confusion_matrix",
    "image_scores",
    "per_class_table",
    "per_image_scores",
    "segmentation_metrics",
    "task_metrics",
    "threshold_counts",
]

THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.025), 4)  # binary segmentation: the tau candidates


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """(num_classes, num_classes) counts, rows = truth, columns = prediction; ignored pixels left out.

    Truth values that are neither a class id nor the ignore index are left out too (validate rejects them).
    """
    target = target.reshape(-1).long()
    pred = pred.reshape(-1).long()
    keep = (target != ignore_index) & (target >= 0) & (target < num_classes)
    index = target[keep] * num_classes + pred[keep]
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes).cpu()


def class_rates(confusion: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    """Per-class counts and rates; a class with no true samples gets NaN recall, IoU and F1 (it is absent)."""
    cm = np.asarray(confusion, dtype=np.float64)
    tp, truth, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    present = truth > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "tp": tp,
            "truth": truth,
            "predicted": predicted,
            "present": present,
            "iou": np.where(present, tp / (truth + predicted - tp), np.nan),
            "recall": np.where(present, tp / truth, np.nan),
            "f1": np.where(present, 2 * tp / (truth + predicted), np.nan),
            "precision": np.where(predicted > 0, tp / predicted, np.where(present, 0.0, np.nan)),
            "total": np.array(cm.sum()),
        }


def _mean(values: np.ndarray, present: np.ndarray) -> float:
    return float(np.nanmean(values)) if present.any() else float("nan")


def segmentation_metrics(confusion: np.ndarray | torch.Tensor, class_names: Sequence[str]) -> dict[str, float]:
    """mIoU, mean Dice, pixel accuracy, mean class accuracy; per class IoU, Dice, precision and recall.

    A class with no ground-truth pixels has no IoU: it is reported under ``absent_classes`` (a count in the
    dict, names by :func:`absent_classes`) and left out of every mean instead of counting as 0 or 1.
    """
    r = class_rates(confusion)
    present, total = r["present"], float(r["total"])
    result: dict[str, float] = {
        "miou": _mean(r["iou"], present),
        "pixel_accuracy": float(r["tp"].sum() / total) if total else float("nan"),
        "mean_class_accuracy": _mean(r["recall"], present),
        "absent_classes": float((~present).sum()),
        "mean_dice": _mean(r["f1"], present),
    }
    for i, name in enumerate(class_names):
        result[f"iou_{name}"] = float(r["iou"][i])
        result[f"dice_{name}"] = float(r["f1"][i])
        result[f"precision_{name}"] = float(r["precision"][i])
        result[f"recall_{name}"] = float(r["recall"][i])
    return result


def classification_metrics(confusion: np.ndarray | torch.Tensor, class_names: Sequence[str]) -> dict[str, float]:
    """Accuracy, balanced accuracy (mean recall), macro-F1; per class precision, recall and F1.

    Classes without val images are absent: counted under ``absent_classes`` and left out of the means.
    """
    r = class_rates(confusion)
    present, total = r["present"], float(r["total"])
    result: dict[str, float] = {
        "accuracy": float(r["tp"].sum() / total) if total else float("nan"),
        "balanced_accuracy": _mean(r["recall"], present),
        "macro_f1": _mean(r["f1"], present),
        "absent_classes": float((~present).sum()),
    }
    for i, name in enumerate(class_names):
        result[f"precision_{name}"] = float(r["precision"][i])
        result[f"recall_{name}"] = float(r["recall"][i])
        result[f"f1_{name}"] = float(r["f1"][i])
    return result


def task_metrics(task: str, confusion: np.ndarray | torch.Tensor, class_names: Sequence[str]) -> dict[str, float]:
    fn = classification_metrics if task == "classification" else segmentation_metrics
    return fn(confusion, class_names)


def per_class_table(confusion: np.ndarray | torch.Tensor, class_names: Sequence[str]) -> dict[str, list]:
    """Columns of the per-class CSV, the same for both tasks (F1 is Dice for pixels); support = true count."""
    r = class_rates(confusion)
    rounded = {k: [None if v != v else round(float(v), 6) for v in r[k]] for k in ("iou", "f1", "precision", "recall")}
    return {
        "class": list(class_names),
        **rounded,
        "support": r["truth"].astype(np.int64).tolist(),
        "predicted": r["predicted"].astype(np.int64).tolist(),
    }


def threshold_counts(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int, thresholds: np.ndarray = THRESHOLDS
) -> np.ndarray:
    """(len(thresholds), 3) true positives, false positives, false negatives of ``sigmoid(logit) > t``."""
    valid = target != ignore_index
    prob, truth = logits.reshape(target.shape)[valid].sigmoid().float(), target[valid].bool()
    t = torch.as_tensor(thresholds, dtype=prob.dtype)[:, None]
    positive = prob[None, :] > t
    tp = (positive & truth).sum(dim=1)
    fp = (positive & ~truth).sum(dim=1)
    fn = (~positive & truth).sum(dim=1)
    return torch.stack([tp, fp, fn], dim=1).numpy()


def best_threshold(counts: np.ndarray, thresholds: np.ndarray = THRESHOLDS) -> tuple[float, float]:
    """(tau, foreground Dice at tau): the threshold with the highest Dice; ties go to the one nearest 0.5."""
    tp, fp, fn = (counts[:, i].astype(np.float64) for i in range(3))
    with np.errstate(divide="ignore", invalid="ignore"):
        dice = np.nan_to_num(2 * tp / (2 * tp + fp + fn))
    best = np.flatnonzero(dice == dice.max())
    pick = best[np.argmin(np.abs(thresholds[best] - 0.5))]
    return float(thresholds[pick]), float(dice[pick])


def per_image_scores(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int
) -> list[dict[str, float]]:
    """mIoU and pixel accuracy of each image in a batch, for ranking images and paired statistics.

    An image's mIoU averages the classes present in its truth or its prediction (a class predicted where it is
    absent counts as IoU 0); an image whose pixels are all ignored gets NaN.
    """
    return [image_scores(confusion_matrix(p, t, num_classes, ignore_index)) for p, t in zip(pred, target, strict=True)]


def image_scores(confusion: np.ndarray | torch.Tensor) -> dict[str, float]:
    """mIoU (over classes in the truth or the prediction) and pixel accuracy from one image's confusion matrix."""
    cm = np.asarray(confusion, dtype=np.float64)
    tp, truth, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    union = truth + predicted - tp
    seen = union > 0
    return {
        "miou": float((tp[seen] / union[seen]).mean()) if seen.any() else float("nan"),
        "pixel_accuracy": float(tp.sum() / cm.sum()) if cm.sum() else float("nan"),
    }


def absent_classes(confusion: np.ndarray | torch.Tensor, class_names: Sequence[str]) -> list[str]:
    truth = np.asarray(confusion).sum(axis=1)
    return [name for name, count in zip(class_names, truth, strict=True) if count == 0]
