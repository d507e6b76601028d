"""Confusion-matrix metrics. Pure functions over tensors and arrays; results are plain dicts of floats."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["absent_classes", "confusion_matrix", "per_image_scores", "segmentation_metrics"]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """(num_classes, num_classes) counts, rows = truth, columns = prediction; ignored pixels left out.

    Truth values that are neither a class id nor the ignore index are left out too (validate rejects them).
    """
    target = target.reshape(-1).long()
    pred = pred.reshape(-1).long()
    keep = (target != ignore_index) & (target >= 0) & (target < num_classes)
    index = target[keep] * num_classes + pred[keep]
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes).cpu()


def segmentation_metrics(confusion: np.ndarray | torch.Tensor, class_names: Sequence[str]) -> dict[str, float]:
    """mIoU, mean Dice, pixel accuracy, mean class accuracy; per class IoU, Dice, precision and recall.

    A class with no ground-truth pixels has no IoU: it is reported under ``absent_classes`` (a count in the
    dict, names by :func:`absent_classes`) and left out of every mean instead of counting as 0 or 1.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(cm)
    truth = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    present = truth > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(present, tp / (truth + predicted - tp), np.nan)
        recall = np.where(present, tp / truth, np.nan)
    total = cm.sum()
    result: dict[str, float] = {
        "miou": float(np.nanmean(iou)) if present.any() else float("nan"),
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "mean_class_accuracy": float(np.nanmean(recall)) if present.any() else float("nan"),
        "absent_classes": float((~present).sum()),
    }
    with np.errstate(divide="ignore", invalid="ignore"):
        dice = np.where(present, 2 * tp / (truth + predicted), np.nan)
        precision = np.where(predicted > 0, tp / predicted, np.where(present, 0.0, np.nan))
    result["mean_dice"] = float(np.nanmean(dice)) if present.any() else float("nan")
    for i, name in enumerate(class_names):
        result[f"iou_{name}"] = float(iou[i])
        result[f"dice_{name}"] = float(dice[i])
        result[f"precision_{name}"] = float(precision[i])
        result[f"recall_{name}"] = float(recall[i])
    return result


def per_image_scores(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int
) -> list[dict[str, float]]:
    """mIoU and pixel accuracy of each image in a batch, for ranking images and paired statistics.

    An image's mIoU averages the classes present in its truth or its prediction (a class predicted where it is
    absent counts as IoU 0); an image whose pixels are all ignored gets NaN.
    """
    scores = []
    for p, t in zip(pred, target, strict=True):
        cm = confusion_matrix(p, t, num_classes, ignore_index).numpy().astype(np.float64)
        tp, truth, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
        union = truth + predicted - tp
        seen = union > 0
        scores.append(
            {
                "miou": float((tp[seen] / union[seen]).mean()) if seen.any() else float("nan"),
                "pixel_accuracy": float(tp.sum() / cm.sum()) if cm.sum() else float("nan"),
            }
        )
    return scores


def absent_classes(confusion: np.ndarray | torch.Tensor, class_names: Sequence[str]) -> list[str]:
    truth = np.asarray(confusion).sum(axis=1)
    return [name for name, count in zip(class_names, truth, strict=True) if count == 0]
