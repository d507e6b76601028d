"""evaluate: score the trained model on val, and on test where the data has one; metrics for `dvc metrics`, plots
for people.

Images reach the model as its metadata says (the input size, policy and normalisation train decided); segmentation
is scored at each mask's original resolution, binary models with the threshold stored with them. The splits are
scored apart and nothing here feeds back into a choice: train picked the best epoch and the threshold on val, so
the test figures are the unbiased ones. metrics.json holds both splits; each split's folder holds per_class.csv,
per_image.csv (each image's scores and group, and for classification its actual and predicted class: for
comparing models image by image), per_group.csv and per_group.png (the metrics over each group of images that
``data.groups`` defines: which sequence, site or camera fails; one row ``all`` without groups), a normalised
confusion matrix and best/worst panels.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from visionflow import tracking
from visionflow.config import EVAL_SPLITS, Config, EvaluatedSplit
from visionflow.corruptions import CORRUPTIONS, SEVERITIES, Corruption
from visionflow.data.dataset import ImageDataset
from visionflow.data.loading import make_dataset, make_loader
from visionflow.engine import Runtime, resolve_device
from visionflow.errors import MissingInput
from visionflow.handoffs import AcceptedManifest, DatasetInfo, EvaluationMetrics, ModelMeta, TrainingRun
from visionflow.inference import Inference
from visionflow.metrics import absent_classes, confusion_matrix, image_scores, per_class_table, task_metrics
from visionflow.models import load_model
from visionflow.plots import (
    plot_confusion_matrix,
    plot_corruptions,
    plot_examples,
    plot_groups,
    plot_notice,
    plot_overlays,
)

__all__ = ["run"]


def _rounded(metrics: dict[str, float]) -> dict[str, float | None]:
    """Six decimals; an undefined metric (an absent class's IoU, NaN) is written as null."""
    return {k: (None if v != v else round(v, 6)) for k, v in metrics.items()}


class _Collector:
    """Per-image predictions and scores as ``evaluate`` streams them."""

    def __init__(self, task: str, num_classes: int, ignore_index: int, groups: list[str]) -> None:
        self.task, self.num_classes, self.ignore_index = task, num_classes, ignore_index
        self.groups = groups  # each image's group, in the loader's order
        self.predictions: list[np.ndarray] = []  # segmentation masks, for the overlay panels
        self.rows: list[dict[str, float]] = []
        self.group_confusion: dict[str, np.ndarray] = {}  # segmentation: the images' confusion summed per group

    def __call__(self, preds: list[torch.Tensor], targets: list[torch.Tensor], logits: list[torch.Tensor]) -> None:
        if self.task == "classification":
            for pred, target, logit in zip(preds, targets, logits, strict=True):
                confidence = float(logit.float().softmax(0).max())
                self.rows.append({"label": int(target), "predicted": int(pred), "confidence": confidence})
            return
        self.predictions.extend(p.to(torch.uint8).numpy() for p in preds)
        for pred, target in zip(preds, targets, strict=True):
            confusion = confusion_matrix(pred, target, self.num_classes, self.ignore_index).numpy()
            group = self.groups[len(self.rows)]
            self.group_confusion[group] = self.group_confusion.get(group, 0) + confusion
            self.rows.append(image_scores(confusion))


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
    train = config.train
    runtime = Inference.of(meta).runtime(resolve_device(train.device), train.channels_last, train.precision)
    return runtime.prepare(model), meta, runtime


def _per_image_table(task: str, collected: _Collector, dataset: ImageDataset, rows: pd.DataFrame,
                     classes: tuple[str, ...]) -> pd.DataFrame:  # fmt: skip
    """One row per image: segmentation scores; or the actual and predicted class, whether they agree, and the
    confidence."""
    table = pd.DataFrame(collected.rows).assign(
        id=dataset.ids, image_path=rows["image_path"].tolist(), group=collected.groups
    )
    if task == "segmentation":
        return table[["id", "image_path", "group", "miou", "pixel_accuracy"]]
    names = np.array(classes)
    table = table.assign(
        actual=names[table["label"]],
        predicted=names[table["predicted"]],
        correct=(table["label"] == table["predicted"]).astype(int),
    )
    return table[["id", "image_path", "group", "actual", "predicted", "correct", "confidence"]]


NO_GROUP = "all"  # the one group of a split whose data has no groups (data.groups unset)


def _groups(rows: pd.DataFrame) -> list[str]:
    """Each row's group (the manifest's, from data.groups), or :data:`NO_GROUP` where the data has none."""
    if "group" not in rows or rows["group"].isna().all():
        return [NO_GROUP] * len(rows)
    return rows["group"].astype(str).tolist()  # prepare gave every image a group (its own where none matched)


def _per_group(task: str, collected: _Collector, per_image: pd.DataFrame, classes: tuple[str, ...]) -> pd.DataFrame:
    """One row per group: its images and the task's metrics over them (segmentation: from the group's summed
    confusion matrix, as the split's own mIoU is; classification: from its labels), ``score`` the headline."""
    out = []
    for group, members in per_image.groupby("group", sort=True).groups.items():
        members = list(members)
        if task == "segmentation":
            metrics = task_metrics(task, collected.group_confusion[str(group)], classes)
            row = {"miou": metrics["miou"], "pixel_accuracy": metrics["pixel_accuracy"],
                   "mean_image_miou": float(per_image.loc[members, "miou"].mean())}  # fmt: skip
            score = metrics["miou"]
        else:
            picked = [collected.rows[i] for i in members]
            labels = torch.tensor([r["label"] for r in picked])
            predicted = torch.tensor([r["predicted"] for r in picked])
            metrics = task_metrics(task, confusion_matrix(predicted, labels, len(classes), -100), classes)
            row, score = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}, metrics["accuracy"]
        out.append({"group": str(group), "images": len(members), "score": score, **row})
    return pd.DataFrame(out).round(6)


@dataclass(frozen=True)
class _Scored:
    """One split's figures, as metrics.json and MLflow take them."""

    metrics: dict[str, float]
    absent: tuple[str, ...]
    images: int
    headline: str
    groups: pd.DataFrame  # per_group.csv's rows
    corrupted: dict[str, float] = field(default_factory=dict)  # <corruption>_<severity>: score, for MLflow


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
    inference = Inference.of(meta)
    dataset = make_dataset(config, info, rows, inference.input, False)
    collected = _Collector(task, len(info.classes), info.ignore_index, _groups(rows))
    loader = make_loader(dataset, config.evaluate.batch_size)
    result = inference.evaluate(model, loader, runtime, len(info.classes), info.ignore_index, on_batch=collected)
    metrics = task_metrics(task, result.confusion, info.classes)
    metrics["images_per_second"] = result.images_per_second
    if meta.threshold is not None:
        metrics["threshold"] = inference.threshold
    pd.DataFrame(per_class_table(result.confusion, info.classes)).to_csv(files.per_class, index=False)
    per_image = _per_image_table(task, collected, dataset, rows, info.classes)
    per_image.to_csv(files.per_image, index=False)
    primary = "miou" if task == "segmentation" else "accuracy"  # the headline, as below
    groups = _per_group(task, collected, per_image, info.classes)
    groups.to_csv(files.per_group, index=False)
    shown = _shown(groups)
    title = f"{split}: {primary} per group of images" + (
        f" (worst and best {SHOWN_GROUPS} of {len(groups)})" if len(shown) < len(groups) else ""
    )
    plot_groups(shown, primary, files.per_group_plot, title=title, overall=metrics[primary])
    if task == "classification":
        _classification_panels(config, files, dataset, per_image)
        headline = f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}"
    else:
        _segmentation_panels(config, files, dataset, collected, per_image, info)
        headline = f"mIoU {metrics['miou']:.4f}, pixel accuracy {metrics['pixel_accuracy']:.4f}"
    plot_confusion_matrix(result.confusion.numpy(), info.classes, files.confusion_matrix, title=f"{split}: {headline}")
    corrupted: dict[str, float] = {}
    if config.evaluate.corruptions:
        summary, corrupted = _score_corruptions(config, files, dataset, inference, model, runtime, info, primary,
                                                metrics[primary])  # fmt: skip
        metrics |= summary
    absent = tuple(absent_classes(result.confusion, info.classes))
    return _Scored(metrics, absent, len(rows), headline, groups, corrupted)


def _score_corruptions(config: Config, files: EvaluatedSplit, dataset: ImageDataset, inference: Inference,
                       model: torch.nn.Module, runtime: Runtime, info: DatasetInfo, primary: str,
                       clean: float) -> tuple[dict[str, float], dict[str, float]]:  # fmt: skip
    """The split scored again under each corruption at each severity (:mod:`visionflow.corruptions`, seeded by
    ``project.seed``), through the same inference path. Writes corruptions.csv and .png; returns the summary for
    metrics.json (each corruption's mean over the severities, their mean, its ratio to the clean score, the
    seconds it took) and every corruption and severity's score for MLflow. ``primary``: the headline metric,
    ``clean`` its value on the uncorrupted split."""
    start = time.perf_counter()
    loader = make_loader(dataset, config.evaluate.batch_size)
    scores: dict[str, list[float]] = {}
    try:
        for name in tqdm(CORRUPTIONS, desc=f"corruptions ({files.split})", unit="corruption"):
            for severity in SEVERITIES:
                dataset.corrupt = Corruption(name, severity, config.project.seed)
                result = inference.evaluate(model, loader, runtime, len(info.classes), info.ignore_index)
                metrics = task_metrics(inference.task, result.confusion, info.classes)
                scores.setdefault(name, []).append(metrics[primary])
    finally:
        dataset.corrupt = None
    seconds = time.perf_counter() - start
    table = pd.DataFrame({"severity": [0, *SEVERITIES]} | {n: [clean, *v] for n, v in scores.items()}).round(6)
    table.to_csv(files.corruptions, index=False)
    mean = float(np.mean([v for values in scores.values() for v in values]))
    title = f"{files.split}: {primary} under corruptions (mean {mean:.3f}, clean {clean:.3f})"
    plot_corruptions(table, primary, files.corruptions_plot, title=title)
    summary = {f"corruption_{n}": float(np.mean(v)) for n, v in scores.items()}
    summary |= {"corruption_mean": mean, "corruption_ratio": mean / clean if clean else float("nan"),
                "corruption_seconds": seconds}  # fmt: skip
    detail = {f"corruption_{n}_{s}": v for n, values in scores.items() for s, v in zip(SEVERITIES, values, strict=True)}
    return summary, detail


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
            # the split's declared plots: its table with the header and no rows (`dvc plots show` leaves the chart
            # out, no warning), its figures saying why they are empty (a missing image fails the page's load)
            none = np.zeros((len(info.classes),) * 2, dtype=np.int64)
            pd.DataFrame(per_class_table(none, info.classes)).iloc[:0].to_csv(files.per_class, index=False)
            for figure in (files.confusion_matrix, files.overlays_best, files.overlays_worst):
                plot_notice(note.strip(), figure, f"{split}: {figure.stem.replace('_', ' ')}")
    report = EvaluationMetrics(
        _rounded(scored["val"].metrics),
        _rounded(scored["test"].metrics) if "test" in scored else None,
        {split: s.images for split, s in scored.items()},
        {split: list(s.absent) for split, s in scored.items()},
    )
    report.write(paths)
    paths.headline.write_text(json.dumps(report.headline(), indent=2) + "\n", encoding="utf-8")

    with tracking.open_run(config, training_run):
        for split, s in scored.items():
            tracking.log_metrics(mlflow_names(split, s.metrics | s.corrupted, info.classes))
            tracking.log_metrics(_group_metrics(split, s.groups))
            for path in paths.evaluated(split).files:
                tracking.log_artifact(path, f"evaluation/{split}")
        tracking.log_artifact(paths.metrics, "evaluation")
        tracking.log_artifact(paths.headline, "evaluation")
    for split, s in scored.items():
        print(f"evaluate: {split} {s.headline} on {s.images} images")
        if "corruption_mean" in s.metrics:
            m = s.metrics
            print(f"  under corruptions: mean {m['corruption_mean']:.4f} ({m['corruption_ratio']:.2f} of clean; "
                  f"{len(CORRUPTIONS)} corruptions x severities {', '.join(map(str, SEVERITIES))}, "
                  f"{m['corruption_seconds']:.0f} s)")  # fmt: skip
        _print_per_class(meta.task, s.metrics, info.classes)
        _print_groups(s.groups)
    folders = ", ".join(str(paths.evaluated(split).root) for split in scored)
    print(f"evaluate: -> {paths.headline}, {paths.metrics}, {folders}")
    return report


def _print_per_class(task: str, metrics: dict[str, float], classes: tuple[str, ...]) -> None:
    key = "iou" if task == "segmentation" else "f1"
    for name in classes:
        value = metrics[f"{key}_{name}"]
        print(f"  {name:<14} {key.upper():<3} {'absent' if value != value else f'{value:.4f}'}")


_UNSAFE = re.compile(r"[^\w\-. /]")  # what an MLflow metric name may not hold


MAX_LOGGED_GROUPS = 100  # more groups (a patient each) are in per_group.csv, not one MLflow metric each
SHOWN_GROUPS = 20  # the worst and the best this many in the plot and on the console; per_group.csv has all


def _shown(groups: pd.DataFrame) -> pd.DataFrame:
    """The groups worth a look, worst first: all of them, or the worst and the best :data:`SHOWN_GROUPS`."""
    ranked = groups.sort_values("score", kind="stable")
    if len(ranked) <= 2 * SHOWN_GROUPS:
        return ranked
    return pd.concat([ranked.head(SHOWN_GROUPS), ranked.tail(SHOWN_GROUPS)])


PER_CLASS = ("iou", "dice", "precision", "recall", "f1")  # metrics.json's <kind>_<class> keys


def mlflow_names(split: str, metrics: dict[str, float], classes: tuple[str, ...]) -> dict[str, float]:
    """metrics.json's keys as MLflow names grouped by prefix, so its run page shows a section per split and kind:
    ``val/miou``, ``val/iou/pole``, ``val/corruption/fog/3`` (a severity), ``val/corruption/fog`` (their mean),
    ``val/corruption_mean``."""
    nested = {f"{kind}_{name}": f"{kind}/{name}" for kind in PER_CLASS for name in classes}
    nested |= {f"corruption_{c}": f"corruption/{c}" for c in CORRUPTIONS}
    nested |= {f"corruption_{c}_{s}": f"corruption/{c}/{s}" for c in CORRUPTIONS for s in SEVERITIES}
    return {f"{split}/{_UNSAFE.sub('_', nested.get(k, k))}": v for k, v in metrics.items()}


def _group_metrics(split: str, groups: pd.DataFrame) -> dict[str, float]:
    """``val/group/<group>`` per group (the headline: mIoU or accuracy), where the data has groups and at
    most :data:`MAX_LOGGED_GROUPS` of them (the name made safe for MLflow)."""
    if list(groups["group"]) == [NO_GROUP] or len(groups) > MAX_LOGGED_GROUPS:
        return {}
    return {f"{split}/group/{_UNSAFE.sub('_', g)}": v
            for g, v in zip(groups["group"], groups["score"], strict=True) if v == v}  # fmt: skip


def _print_groups(groups: pd.DataFrame) -> None:
    if list(groups["group"]) == [NO_GROUP]:
        return
    shown = _shown(groups)
    cut = len(shown) < len(groups)
    more = f"; the worst and best {SHOWN_GROUPS} of {len(groups)}, all in per_group.csv" if cut else ""
    print(f"  per group (score, images{more}):")
    for row in shown.itertuples():
        print(f"  {row.group:<14} {row.score:.4f}  {row.images}")
