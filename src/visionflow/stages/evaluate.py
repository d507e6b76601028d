"""evaluate: score the trained model on the val split; metrics for `dvc metrics`, plots for people."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd
from torch.utils.data import DataLoader

from visionflow import tracking
from visionflow.config import Config
from visionflow.data.dataset import SegmentationDataset
from visionflow.data.manifest import read_dataset_info, read_manifest, split_rows
from visionflow.engine import Runtime, evaluate, resolve_device
from visionflow.metrics import absent_classes, segmentation_metrics
from visionflow.models import load_model
from visionflow.plots import plot_confusion_matrix

__all__ = ["EvaluateResult", "run"]


@dataclass(frozen=True)
class EvaluateResult:
    metrics: dict[str, float]
    absent_classes: list[str]


def _json_safe(metrics: dict[str, float]) -> dict[str, float | None]:
    """NaN is not JSON: an undefined metric (an absent class's IoU) is written as null."""
    return {k: (None if v != v else round(v, 6)) for k, v in metrics.items()}


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
    runtime = Runtime(resolve_device(config.train.device), config.train.channels_last, config.train.precision)
    model = runtime.prepare(model)
    loader = DataLoader(SegmentationDataset(rows, size=config.train.input_size), batch_size=config.evaluate.batch_size)
    result = evaluate(model, loader, None, len(info.classes), info.ignore_index, runtime)
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
    plot_confusion_matrix(
        result.confusion.numpy(),
        info.classes,
        paths.confusion_matrix,
        title=f"val confusion (mIoU {metrics['miou']:.3f})",
    )

    with tracking.open_run(config, paths.run_info):
        tracking.log_metrics({f"val_{k}": v for k, v in metrics.items()})
        for path in (paths.metrics, paths.per_class, paths.confusion_matrix):
            tracking.log_artifact(path, "evaluation")
    print(
        f"evaluate: val mIoU {metrics['miou']:.4f}, pixel accuracy {metrics['pixel_accuracy']:.4f} "
        f"on {len(rows)} images -> {paths.metrics}"
    )
    for name in info.classes:
        value = metrics[f"iou_{name}"]
        print(f"  {name:<14} IoU {'absent' if value != value else f'{value:.4f}'}")
    return EvaluateResult(metrics, absent)
