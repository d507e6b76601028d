"""evaluate: score the trained model on the val split; metrics for `dvc metrics`, plots for people."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from visionflow import tracking
from visionflow.config import Config
from visionflow.data.dataset import SegmentationDataset
from visionflow.data.manifest import read_dataset_info, read_manifest, split_rows
from visionflow.engine import Runtime, evaluate, resolve_device, resolve_precision
from visionflow.metrics import absent_classes, per_image_scores, segmentation_metrics
from visionflow.models import load_model
from visionflow.plots import plot_confusion_matrix, plot_overlays

__all__ = ["EvaluateResult", "run"]


@dataclass(frozen=True)
class EvaluateResult:
    metrics: dict[str, float]
    absent_classes: list[str]


def _json_safe(metrics: dict[str, float]) -> dict[str, float | None]:
    """NaN is not JSON: an undefined metric (an absent class's IoU) is written as null."""
    return {k: (None if v != v else round(v, 6)) for k, v in metrics.items()}


def _plot_extremes(
    config: Config,
    dataset: SegmentationDataset,
    predictions: list[np.ndarray],
    per_image: pd.DataFrame,
    classes: tuple[str, ...],
    ignore_index: int,
) -> None:
    """Overlay panels of the N best and the N worst val images by per-image mIoU."""
    count = min(config.evaluate.overlays, len(per_image))
    ranked = per_image["miou"].fillna(-1).sort_values(kind="stable")
    for order, path, label in (
        (ranked.index[::-1][:count], config.paths.overlays_best, "best"),
        (ranked.index[:count], config.paths.overlays_worst, "worst"),
    ):
        samples = [
            (dataset.ids[i], float(per_image.at[i, "miou"]), dataset.images[i], dataset.masks[i], predictions[i])
            for i in order
        ]
        plot_overlays(samples, classes, ignore_index, path, title=f"{count} {label} val images by mIoU")


def run(config: Config) -> EvaluateResult:
    paths = config.paths
    info = read_dataset_info(paths.dataset_info)
    rows = split_rows(read_manifest(paths.accepted, made_by="validate"), "val", paths.accepted)
    model, meta = load_model(paths.weights)
    if list(meta["classes"]) != list(info.classes):  # type: ignore[call-overload]
        raise ValueError(
            f"{paths.weights} was trained on classes {meta['classes']}, the data has {info.classes}; "
            "run `dvc repro` to retrain"
        )
    device = resolve_device(config.train.device)
    runtime = Runtime(device, config.train.channels_last, resolve_precision(config.train.precision, device))
    model = runtime.prepare(model)
    dataset = SegmentationDataset(rows, size=config.train.input_size)
    loader = DataLoader(dataset, batch_size=config.evaluate.batch_size)
    predictions: list[np.ndarray] = []
    scores: list[dict[str, float]] = []

    def keep(images: torch.Tensor, masks: torch.Tensor, pred: torch.Tensor) -> None:
        predictions.extend(pred.to(torch.uint8).numpy())
        scores.extend(per_image_scores(pred, masks, len(info.classes), info.ignore_index))

    result = evaluate(model, loader, None, len(info.classes), info.ignore_index, runtime, on_batch=keep)
    metrics = segmentation_metrics(result.confusion, info.classes)
    metrics["images_per_second"] = result.images_per_second
    absent = absent_classes(result.confusion, info.classes)

    paths.evaluation.mkdir(parents=True, exist_ok=True)
    report = {"val": _json_safe(metrics), "absent_classes": absent, "images": len(rows)}
    paths.metrics.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    per_class = pd.DataFrame(
        {
            "class": info.classes,
            "iou": [metrics[f"iou_{c}"] for c in info.classes],
            "true_pixels": result.confusion.sum(dim=1).tolist(),
            "predicted_pixels": result.confusion.sum(dim=0).tolist(),
        }
    )
    per_class.to_csv(paths.per_class, index=False)
    per_image = pd.DataFrame(scores).assign(id=dataset.ids, image_path=rows["image_path"].tolist())
    per_image[["id", "image_path", "miou", "pixel_accuracy"]].to_csv(paths.per_image, index=False)
    _plot_extremes(config, dataset, predictions, per_image, info.classes, info.ignore_index)
    plot_confusion_matrix(
        result.confusion.numpy(),
        info.classes,
        paths.confusion_matrix,
        title=f"val confusion (mIoU {metrics['miou']:.3f})",
    )

    with tracking.open_run(config, paths.run_info):
        tracking.log_metrics({f"val_{k}": v for k, v in metrics.items()})
        for path in (
            paths.metrics,
            paths.per_class,
            paths.per_image,
            paths.confusion_matrix,
            paths.overlays_best,
            paths.overlays_worst,
        ):
            tracking.log_artifact(path, "evaluation")
    print(
        f"evaluate: val mIoU {metrics['miou']:.4f}, pixel accuracy {metrics['pixel_accuracy']:.4f} "
        f"on {len(rows)} images -> {paths.metrics}"
    )
    for name in info.classes:
        value = metrics[f"iou_{name}"]
        print(f"  {name:<14} IoU {'absent' if value != value else f'{value:.4f}'}")
    return EvaluateResult(metrics, absent)
