"""evaluate: score the trained model on the val split; metrics for `dvc metrics`, plots for people.

Images reach the model as its metadata says (the input size, policy and normalisation train decided); segmentation
is scored at each mask's original resolution, binary models with the threshold stored with them. Both tasks write
metrics.json, per_class.csv, per_image.csv (each image's scores, and for classification its actual and predicted
class: for comparing models image by image), a normalised confusion matrix and best/worst panels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from visionflow import tracking
from visionflow.config import Config, InputConfig
from visionflow.data.dataset import ImageDataset
from visionflow.data.loading import make_dataset, make_loader
from visionflow.engine import Runtime, evaluate, resolve_device, resolve_precision
from visionflow.errors import MissingInput
from visionflow.handoffs import AcceptedManifest, DatasetInfo, EvaluationMetrics, ModelMeta, TrainingRun
from visionflow.metrics import absent_classes, per_class_table, per_image_scores, task_metrics
from visionflow.models import load_model
from visionflow.plots import plot_confusion_matrix, plot_examples, plot_overlays

__all__ = ["run"]


def _rounded(metrics: dict[str, float]) -> dict[str, float | None]:
    """Six decimals; an undefined metric (an absent class's IoU, NaN) is written as null."""
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
                str(per_image.at[i, "actual"]),
                str(per_image.at[i, "predicted"]),
                float(per_image.at[i, "confidence"]),
            )
            for i in chosen
        ]
        plot_examples(samples, path, title=f"{len(samples)} {label} val images")


def _load(config: Config, info: DatasetInfo) -> tuple[torch.nn.Module, ModelMeta, Runtime]:
    """The trained model on this machine's device, checked against the data it is to be scored on."""
    model, meta = load_model(ModelMeta.path(config.paths))
    if tuple(meta.classes) != tuple(info.classes) or meta.task != info.task:
        raise MissingInput(
            f"{ModelMeta.path(config.paths)} is a {meta.task} model of classes {list(meta.classes)}; the data is "
            f"{info.task} with classes {list(info.classes)}; run `dvc repro train` to retrain"
        )
    device = resolve_device(config.train.device)
    runtime = Runtime(
        device, config.train.channels_last, resolve_precision(config.train.precision, device), meta.mean, meta.std
    )
    return runtime.prepare(model), meta, runtime


def _per_image_table(task: str, collected: _Collector, dataset: ImageDataset, rows: pd.DataFrame,
                     classes: tuple[str, ...]) -> pd.DataFrame:  # fmt: skip
    """One row per image: segmentation scores; or the actual and predicted class, whether they agree, and the
    confidence."""
    table = pd.DataFrame(collected.rows).assign(id=dataset.ids, image_path=rows["image_path"].tolist())
    if task == "segmentation":
        return table[["id", "image_path", "miou", "pixel_accuracy"]]
    names = np.array(classes)
    table = table.assign(
        actual=names[table["label"]],
        predicted=names[table["predicted"]],
        correct=(table["label"] == table["predicted"]).astype(int),
    )
    return table[["id", "image_path", "actual", "predicted", "correct", "confidence"]]


def run(config: Config) -> EvaluationMetrics:
    tracking.ensure_reachable(config)
    paths = config.paths
    info = DatasetInfo.read(paths)
    rows = AcceptedManifest.read(paths).split("val")
    training_run = TrainingRun.read(paths)
    model, meta, runtime = _load(config, info)
    task = meta.task
    dataset = make_dataset(config, info, rows, InputConfig(size=meta.input_size, policy=meta.input_policy), False)
    threshold = 0.5 if meta.threshold is None else meta.threshold
    collected = _Collector(task, len(info.classes), info.ignore_index)
    result = evaluate(
        model,
        make_loader(dataset, config.evaluate.batch_size),
        None,
        len(info.classes),
        info.ignore_index,
        runtime,
        meta.input_policy,
        threshold,
        on_batch=collected,
    )
    metrics = task_metrics(task, result.confusion, info.classes)
    metrics["images_per_second"] = result.images_per_second
    if meta.threshold is not None:
        metrics["threshold"] = threshold

    paths.evaluation.mkdir(parents=True, exist_ok=True)
    report = EvaluationMetrics(_rounded(metrics), tuple(absent_classes(result.confusion, info.classes)), len(rows))
    report.write(paths)
    pd.DataFrame(per_class_table(result.confusion, info.classes)).to_csv(paths.per_class, index=False)
    per_image = _per_image_table(task, collected, dataset, rows, info.classes)
    per_image.to_csv(paths.per_image, index=False)
    if task == "classification":
        _classification_panels(config, dataset, per_image, info)
        headline = f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}"
    else:
        _segmentation_panels(config, dataset, collected, per_image, info)
        headline = f"mIoU {metrics['miou']:.4f}, pixel accuracy {metrics['pixel_accuracy']:.4f}"
    plot_confusion_matrix(result.confusion.numpy(), info.classes, paths.confusion_matrix, title=f"val: {headline}")

    with tracking.open_run(config, training_run):
        tracking.log_metrics({f"val_{k}": v for k, v in metrics.items()})
        for path in (paths.metrics, paths.per_class, paths.per_image, paths.confusion_matrix, paths.overlays_best,
                     paths.overlays_worst):  # fmt: skip
            tracking.log_artifact(path, "evaluation")
    print(f"evaluate: val {headline} on {len(rows)} images -> {paths.metrics}")
    _print_per_class(task, metrics, info.classes)
    return report


def _print_per_class(task: str, metrics: dict[str, float], classes: tuple[str, ...]) -> None:
    key = "iou" if task == "segmentation" else "f1"
    for name in classes:
        value = metrics[f"{key}_{name}"]
        print(f"  {name:<14} {key.upper():<3} {'absent' if value != value else f'{value:.4f}'}")
