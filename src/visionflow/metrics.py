"""Confusion-matrix metrics. Pure functions over tensors and arrays; results are plain dicts of floats."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["absent_classes", "confusion_matrix", "segmentation_metrics"]


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
    """mIoU, pixel accuracy, mean class accuracy and per-class IoU.

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
    for name, value in zip(class_names, iou, strict=True):
        result[f"iou_{name}"] = float(value)
    return result


def absent_classes(confusion: np.ndarray | torch.Tensor, class_names: Sequence[str]) -> list[str]:
    truth = np.asarray(confusion).sum(axis=1)
    return [name for name, count in zip(class_names, truth, strict=True) if count == 0]
