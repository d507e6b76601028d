"""Figures for people: written as PNG files that DVC and MLflow both show."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = [
    "class_palette",
    "error_map",
    "plot_class_distribution",
    "plot_confusion_matrix",
    "plot_examples",
    "plot_groups",
    "plot_overlays",
]


def plot_confusion_matrix(confusion: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix (each row: where the pixels of one true class went)."""
    cm = np.asarray(confusion, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        normalised = np.nan_to_num(cm / cm.sum(axis=1, keepdims=True))
    size = max(5.0, 0.55 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            if normalised[i, j] >= 0.005:
                colour = "white" if normalised[i, j] > 0.5 else "black"
                ax.text(j, i, f"{normalised[i, j]:.2f}", ha="center", va="center", fontsize=8, color=colour)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_class_distribution(table: pd.DataFrame, path: Path, title: str) -> None:
    """Pixel share per class as stored and as the sampler presents it (log scale), with the loss weight."""
    names = table["class"].tolist()
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.45 * len(names) + 1.5)))
    ax.barh(y - 0.2, table["pixel_share"], height=0.4, label="stored", color="#9ecae1")
    ax.barh(y + 0.2, table["sampled_pixel_share"], height=0.4, label="as sampled", color="#3182bd")
    for i, weight in enumerate(table["weight"]):
        ax.annotate(
            f"w={weight:.2f}",
            (1, i),
            xycoords=("axes fraction", "data"),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.set_xscale("log")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("share of train pixels (log)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_groups(table: pd.DataFrame, metric: str, path: Path, title: str, overall: float | None = None) -> None:
    """One bar per group (a sequence, site, camera): its ``metric`` with the number of images, worst at the top, and
    the split's overall value as a line, so a failing group stands out."""
    ranked = table.sort_values("score", kind="stable")
    height = max(2.5, 0.35 * len(ranked) + 1.2)
    fig, ax = plt.subplots(figsize=(7, height))
    bars = ax.barh(ranked["group"].astype(str), ranked["score"].fillna(0), color="#4c72b0")
    for bar, images in zip(bars, ranked["images"], strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {images} img", va="center", fontsize=8)
    if overall is not None:
        ax.axvline(overall, color="#333333", linestyle="--", linewidth=1, label=f"all images: {overall:.3f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel(metric)
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_corruptions(table: pd.DataFrame, metric: str, path: Path, title: str) -> None:
    """One line per corruption: ``metric`` against severity (``table``: a row per severity, 0 the clean score, a
    column per corruption), so the corruption a model cannot stand falls furthest."""
    fig, ax = plt.subplots(figsize=(8.5, 4))
    severities = table["severity"].tolist()
    for column in (c for c in table.columns if c != "severity"):
        ax.plot(severities, table[column], marker="o", label=column.replace("_", " "))
    ax.set_xticks(severities, ["clean" if s == 0 else str(s) for s in severities])
    ax.set_xlabel("severity (ImageNet-C)")
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def class_palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours: class 0 dark grey, the others from tab20 without the greens, reds, blues
    and olives that the error map uses, so a class is never mistaken for an error colour."""
    tab20 = (plt.get_cmap("tab20")(np.arange(20))[:, :3] * 255).astype(np.uint8)
    usable = tab20[[2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 18, 19]]
    others = usable[np.arange(max(num_classes - 1, 0)) % len(usable)]
    return np.vstack([np.array([[60, 60, 60]], np.uint8), others])[:num_classes]


ERROR_COLOURS = {  # error map legend: what each pixel colour means
    "correct": (46, 160, 67),
    "false positive (class where truth is background)": (220, 50, 47),
    "false negative (background where truth is a class)": (38, 139, 210),
    "wrong class": (255, 220, 0),
    "ignored": (128, 128, 128),
}


def error_map(pred: np.ndarray, truth: np.ndarray, ignore_index: int) -> np.ndarray:
    """Per-pixel TP / FP / FN / confusion colours; class 0 is taken as background."""
    colours = list(ERROR_COLOURS.values())
    out = np.empty((*truth.shape, 3), np.uint8)
    out[pred == truth] = colours[0]
    out[(pred != truth) & (truth == 0)] = colours[1]
    out[(pred != truth) & (pred == 0) & (truth != 0)] = colours[2]
    out[(pred != truth) & (pred != 0) & (truth != 0)] = colours[3]
    out[truth == ignore_index] = colours[4]
    return out


def plot_overlays(
    samples: list[tuple[str, float, np.ndarray, np.ndarray, np.ndarray]],
    class_names: Sequence[str],
    ignore_index: int,
    path: Path,
    title: str,
) -> None:
    """One row per (id, score, image, truth, prediction): image, truth, prediction and the error map."""
    palette = class_palette(len(class_names))

    def colour(mask: np.ndarray) -> np.ndarray:
        shown = palette[np.clip(mask, 0, len(class_names) - 1)]
        shown[mask == ignore_index] = 0
        return shown

    rows = max(1, len(samples))
    fig, axes = plt.subplots(rows, 4, figsize=(12, 3 * rows + 0.8), squeeze=False)
    for row, (name, score, image, truth, pred) in zip(axes, samples, strict=False):
        panels = (image, colour(truth), colour(pred), error_map(pred, truth, ignore_index))
        for ax, panel, label in zip(row, panels, ("image", "truth", "prediction", "errors"), strict=True):
            ax.imshow(panel)
            ax.set_title(f"{name}  mIoU {score:.3f}" if label == "image" else label, fontsize=9)
            ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=np.array(c) / 255) for c in ERROR_COLOURS.values()]
    handles += [plt.Rectangle((0, 0), 1, 1, color=palette[i] / 255) for i in range(len(class_names))]
    fig.legend(handles, [*ERROR_COLOURS, *class_names], loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_examples(
    samples: list[tuple[str, np.ndarray, str, str, float]],
    path: Path,
    title: str,
    columns: int = 4,
) -> None:
    """Classification: a grid of (id, image, truth, prediction, confidence); wrong predictions titled in red."""
    rows = max(1, -(-len(samples) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (name, image, truth, pred, confidence) in zip(axes.ravel(), samples, strict=False):
        ax.imshow(image)
        colour = "black" if truth == pred else "red"
        ax.set_title(f"{name}\ntrue {truth} / pred {pred} ({confidence:.2f})", fontsize=8, color=colour)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
