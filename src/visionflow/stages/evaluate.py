"""evaluate: score the trained model on the val split; metrics for `dvc metrics`, plots for people.

Segmentation is scored at each mask's original resolution; binary models use the threshold stored with them.
Both tasks write metrics.json, per_class.csv, per_image.csv (for paired comparisons between models), a
normalised confusion matrix and best/worst panels; classification also writes predictions.csv for the
confusion template of `dvc plots`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from visionflow import tracking
from visionflow.config import Config
from visionflow.data.dataset import ImageDataset
from visionflow.data.loading import make_dataset, make_loader
from visionflow.data.manifest import read_dataset_info, read_manifest, split_rows
from visionflow.data.sources import DatasetInfo
from visionflow.engine import Runtime, evaluate, resolve_device, resolve_precision
from visionflow.metrics import absent_classes, per_class_table, per_image_scores, task_metrics
from visionflow.models import load_model
from visionflow.plots import plot_confusion_matrix, plot_examples, plot_overlays

__all__ = ["EvaluateResult", "run"]


@dataclass(frozen=True)
class EvaluateResult:
    metrics: dict[str, float]
    absent_classes: list[str]


def _json_safe(metrics: dict[str, float]) -> dict[str, float | None]:
    """NaN is not JSON: an undefined metric (an absent class's IoU) is written as null."""
    return {k: (None if v != v else round(v, 6)) for k, v in metrics.items()}


class _Collector:
    """Per-image predictions and scores as ``evaluate`` streams them."""

    def __init__(self, task: str, num_classes: int, ignore_index: int) -> None:
        self.task, self.num_classes, self.ignore_index = task, num_classes, ignore_index
        self.predictions: list[np.ndarray] = []  # segmentation masks, for the overlay panels
        self.rows: list[dict[str, float]] = []

    def __call__(self, preds: list[torch.Tensor], targets: list[torch.Tensor], logits: list[torch.Tensor]) -> None:
        if self.task == "classification":
            for pred, target, logit in zip(preds, targets, logits, strict=True):
                confidence = float(logit.float().softmax(0).max())
                self.rows.append({"label": int(target), "predicted": int(pred), "confidence": confidence})
            return
        self.predictions.extend(p.to(torch.uint8).numpy() for p in preds)
        self.rows.extend(per_image_scores(preds, targets, self.num_classes, self.ignore_index))


def _segmentation_panels(
    config: Config, dataset: ImageDataset, collected: _Collector, per_image: pd.DataFrame, info: DatasetInfo
) -> None:
    """Overlay panels of the N best and the N worst val images by per-image mIoU, at original resolution."""
    count = min(config.evaluate.overlays, len(per_image))
    ranked = per_image["miou"].fillna(-1).sort_values(kind="stable")
    for order, path, label in (
        (ranked.index[::-1][:count], config.paths.overlays_best, "best"),
        (ranked.index[:count], config.paths.overlays_worst, "worst"),
    ):
        samples = [
            (
                dataset.ids[i],
                float(per_image.at[i, "miou"]),
                np.asarray(dataset.cache.image(i)),
                np.asarray(dataset.cache.mask(i)),
                collected.predictions[i],
            )
            for i in order
        ]
        plot_overlays(samples, info.classes, info.ignore_index, path, title=f"{count} {label} val images by mIoU")


def _classification_panels(config: Config, dataset: ImageDataset, per_image: pd.DataFrame, info: DatasetInfo) -> None:
    """The most confident right answers, and the wrong answers ranked by confidence (the worst mistakes)."""
    count = max(1, config.evaluate.overlays) * 2
    right = per_image[per_image["correct"] == 1].sort_values("confidence", ascending=False, kind="stable")
    wrong = per_image[per_image["correct"] == 0].sort_values("confidence", ascending=False, kind="stable")
    for chosen, path, label in (
        (right.index[:count], config.paths.overlays_best, "most confident correct"),
        (wrong.index[:count], config.paths.overlays_worst, "most confident wrong"),
    ):
        samples = [
            (
                dataset.ids[i],
                np.asarray(dataset.cache.image(i)),
                info.classes[int(per_image.at[i, "label"])],
                info.classes[int(per_image.at[i, "predicted"])],
                float(per_image.at[i, "confidence"]),
            )
            for i in chosen
        ]
        plot_examples(samples, path, title=f"{len(samples)} {label} val images")


def run(config: Config) -> EvaluateResult:
    tracking.ensure_reachable(config)
    paths, task = config.paths, config.project.task
    info = read_dataset_info(paths.dataset_info)
    rows = split_rows(read_manifest(paths.accepted, made_by="validate"), "val", paths.accepted)
    model, meta = load_model(paths.weights)
    if list(meta["classes"]) != list(info.classes) or meta.get("task", "segmentation") != task:  # type: ignore[call-overload]
        raise ValueError(
            f"{paths.weights} is a {meta.get('task', 'segmentation')} model of classes {meta['classes']}; the data "
            f"is {task} with classes {list(info.classes)}; run `dvc repro` to retrain"
        )
    device = resolve_device(config.train.device)
    runtime = Runtime(device, config.train.channels_last, resolve_precision(config.train.precision, device))
    model = runtime.prepare(model)
    dataset = make_dataset(config, info, rows, train=False)
    threshold = float(meta.get("threshold", 0.5))  # type: ignore[arg-type]
    collected = _Collector(task, len(info.classes), info.ignore_index)
    result = evaluate(
        model,
        make_loader(dataset, config.evaluate.batch_size),
        None,
        len(info.classes),
        info.ignore_index,
        runtime,
        config.eval_input.policy,
        threshold,
        on_batch=collected,
    )
    metrics = task_metrics(task, result.confusion, info.classes)
    metrics["images_per_second"] = result.images_per_second
    if "threshold" in meta:
        metrics["threshold"] = threshold
    absent = absent_classes(result.confusion, info.classes)

    paths.evaluation.mkdir(parents=True, exist_ok=True)
    report = {"val": _json_safe(metrics), "absent_classes": absent, "images": len(rows)}
    paths.metrics.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    pd.DataFrame(per_class_table(result.confusion, info.classes)).to_csv(paths.per_class, index=False)
    per_image = pd.DataFrame(collected.rows).assign(id=dataset.ids, image_path=rows["image_path"].tolist())
    artifacts = [paths.metrics, paths.per_class, paths.per_image, paths.confusion_matrix]
    if task == "classification":
        per_image["correct"] = (per_image["label"] == per_image["predicted"]).astype(int)
        columns = ["id", "image_path", "label", "predicted", "correct", "confidence"]
        names = np.array(info.classes)
        predictions = pd.DataFrame(
            {"id": per_image["id"], "actual": names[per_image["label"]], "predicted": names[per_image["predicted"]]}
        )
        predictions.to_csv(paths.predictions, index=False)
        artifacts.append(paths.predictions)
        _classification_panels(config, dataset, per_image, info)
        headline = f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}"
    else:
        columns = ["id", "image_path", "miou", "pixel_accuracy"]
        _segmentation_panels(config, dataset, collected, per_image, info)
        headline = f"mIoU {metrics['miou']:.4f}, pixel accuracy {metrics['pixel_accuracy']:.4f}"
    per_image[columns].to_csv(paths.per_image, index=False)
    plot_confusion_matrix(result.confusion.numpy(), info.classes, paths.confusion_matrix, title=f"val: {headline}")
    artifacts += [paths.overlays_best, paths.overlays_worst]

    with tracking.open_run(config, paths.run_info):
        tracking.log_metrics({f"val_{k}": v for k, v in metrics.items()})
        for path in artifacts:
            tracking.log_artifact(path, "evaluation")
    print(f"evaluate: val {headline} on {len(rows)} images -> {paths.metrics}")
    _print_per_class(task, metrics, info.classes)
    return EvaluateResult(metrics, absent)


def _print_per_class(task: str, metrics: dict[str, float], classes: tuple[str, ...]) -> None:
    key = "iou" if task == "segmentation" else "f1"
    for name in classes:
        value = metrics[f"{key}_{name}"]
        print(f"  {name:<14} {key.upper():<3} {'absent' if value != value else f'{value:.4f}'}")
