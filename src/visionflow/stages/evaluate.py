"""evaluate: score the trained model on val, and on test where the data has one; metrics for `dvc metrics`, plots
for people.

Images reach the model as its metadata says (the input size, policy and normalisation train decided); segmentation
is scored at each mask's original resolution, binary models with the threshold stored with them. The splits are
scored apart and nothing here feeds back into a choice: train picked the best epoch and the threshold on val, so
the test figures are the unbiased ones. metrics.json holds both splits; each split's folder holds per_class.csv,
per_image.csv (each image's scores, and for classification its actual and predicted class: for comparing models
image by image), a normalised confusion matrix and best/worst panels.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from visionflow import tracking
from visionflow.config import EVAL_SPLITS, Config, EvaluatedSplit, InputConfig
from visionflow.data.dataset import ImageDataset
from visionflow.data.loading import make_dataset, make_loader
from visionflow.engine import Runtime, evaluate, resolve_device, resolve_precision
from visionflow.errors import MissingInput
from visionflow.handoffs import AcceptedManifest, DatasetInfo, EvaluationMetrics, ModelMeta, TrainingRun
from visionflow.metrics import absent_classes, per_class_table, per_image_scores, task_metrics
from visionflow.models import load_model
from visionflow.plots import plot_confusion_matrix, plot_examples, plot_overlays
from visionflow.windows import Windows

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
    config: Config, files: EvaluatedSplit, dataset: ImageDataset, collected: _Collector, per_image: pd.DataFrame,
    info: DatasetInfo,
) -> None:  # fmt: skip
    """Overlay panels of the N best and the N worst images by per-image mIoU, at original resolution."""
    count = min(config.evaluate.overlays, len(per_image))
    ranked = per_image["miou"].fillna(-1).sort_values(kind="stable")
    for order, path, label in (
        (ranked.index[::-1][:count], files.overlays_best, "best"),
        (ranked.index[:count], files.overlays_worst, "worst"),
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
        title = f"{count} {label} {files.split} images by mIoU"
        plot_overlays(samples, info.classes, info.ignore_index, path, title=title)


def _classification_panels(
    config: Config, files: EvaluatedSplit, dataset: ImageDataset, per_image: pd.DataFrame
) -> None:
    """The most confident right answers, and the wrong answers ranked by confidence (the worst mistakes)."""
    count = max(1, config.evaluate.overlays) * 2
    right = per_image[per_image["correct"] == 1].sort_values("confidence", ascending=False, kind="stable")
    wrong = per_image[per_image["correct"] == 0].sort_values("confidence", ascending=False, kind="stable")
    for chosen, path, label in (
        (right.index[:count], files.overlays_best, "most confident correct"),
        (wrong.index[:count], files.overlays_worst, "most confident wrong"),
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
        plot_examples(samples, path, title=f"{len(samples)} {label} {files.split} images")


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


@dataclass(frozen=True)
class _Scored:
    """One split's figures, as metrics.json and MLflow take them."""

    metrics: dict[str, float]
    absent: tuple[str, ...]
    images: int
    headline: str


def _fresh_folder(files: EvaluatedSplit) -> EvaluatedSplit:
    """Empty the split's folder (evaluate's own output: nothing stale from an earlier run stays)."""
    shutil.rmtree(files.root, ignore_errors=True)
    files.root.mkdir(parents=True)
    return files


def _score_split(config: Config, split: str, rows: pd.DataFrame, model: torch.nn.Module, meta: ModelMeta,
                 runtime: Runtime, info: DatasetInfo) -> _Scored:  # fmt: skip
    """Score one split and write its folder: tables, confusion matrix, best/worst panels."""
    task = meta.task
    files = _fresh_folder(config.paths.evaluated(split))
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
        windows=Windows.of(meta.input_policy, meta.input_size, meta.overlap, meta.flip, meta.scale),
    )
    metrics = task_metrics(task, result.confusion, info.classes)
    metrics["images_per_second"] = result.images_per_second
    if meta.threshold is not None:
        metrics["threshold"] = threshold
    pd.DataFrame(per_class_table(result.confusion, info.classes)).to_csv(files.per_class, index=False)
    per_image = _per_image_table(task, collected, dataset, rows, info.classes)
    per_image.to_csv(files.per_image, index=False)
    if task == "classification":
        _classification_panels(config, files, dataset, per_image)
        headline = f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}"
    else:
        _segmentation_panels(config, files, dataset, collected, per_image, info)
        headline = f"mIoU {metrics['miou']:.4f}, pixel accuracy {metrics['pixel_accuracy']:.4f}"
    plot_confusion_matrix(result.confusion.numpy(), info.classes, files.confusion_matrix, title=f"{split}: {headline}")
    return _Scored(metrics, tuple(absent_classes(result.confusion, info.classes)), len(rows), headline)


def run(config: Config) -> EvaluationMetrics:
    tracking.ensure_reachable(config)
    paths = config.paths
    info = DatasetInfo.read(paths)
    manifest = AcceptedManifest.read(paths)
    training_run = TrainingRun.read(paths)
    model, meta, runtime = _load(config, info)
    splits = [split for split in EVAL_SPLITS if split == "val" or manifest.per_split.get(split)]
    scored = {split: _score_split(config, split, manifest.split(split), model, meta, runtime, info) for split in splits}
    for split in EVAL_SPLITS:
        if split not in scored:  # the folder is a DVC output: it says why it is empty
            files = _fresh_folder(paths.evaluated(split))
            note = f"The data has no {split} split; evaluate scored {', '.join(splits)}.\n"
            (files.root / "README.md").write_text(note, encoding="utf-8")
    report = EvaluationMetrics(
        _rounded(scored["val"].metrics),
        _rounded(scored["test"].metrics) if "test" in scored else None,
        {split: s.images for split, s in scored.items()},
        {split: list(s.absent) for split, s in scored.items()},
    )
    report.write(paths)

    with tracking.open_run(config, training_run):
        for split, s in scored.items():
            tracking.log_metrics({f"{split}_{k}": v for k, v in s.metrics.items()})
            for path in paths.evaluated(split).files:
                tracking.log_artifact(path, f"evaluation/{split}")
        tracking.log_artifact(paths.metrics, "evaluation")
    for split, s in scored.items():
        print(f"evaluate: {split} {s.headline} on {s.images} images")
        _print_per_class(meta.task, s.metrics, info.classes)
    print(f"evaluate: -> {paths.metrics}, {', '.join(str(paths.evaluated(split).root) for split in scored)}")
    return report


def _print_per_class(task: str, metrics: dict[str, float], classes: tuple[str, ...]) -> None:
    key = "iou" if task == "segmentation" else "f1"
    for name in classes:
        value = metrics[f"{key}_{name}"]
        print(f"  {name:<14} {key.upper():<3} {'absent' if value != value else f'{value:.4f}'}")
