"""Figures for people: written as PNG files that DVC and MLflow both show."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

__all__ = [
    "CLASS_COLOURS",
    "ERROR_COLOURS",
    "class_palette",
    "error_map",
    "labels_image",
    "overlay",
    "plot_class_distribution",
    "plot_confusion_matrix",
    "plot_examples",
    "plot_groups",
    "plot_notice",
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


def plot_notice(text: str, path: Path, title: str) -> None:
    """A figure that says why there is nothing to draw (a split the data lacks), where a declared plot is looked for:
    `dvc plots show` draws it instead of failing to load the file."""
    fig, ax = plt.subplots(figsize=(6, 1.6))
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=10, color="#555555")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.2)
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


# Class colours, told apart by readers with any common colour-vision deficiency: Okabe and Ito's and Paul Tol's
# colour-blind-safe sets, ordered greedily so that each next colour is the farthest (CIELAB) from those before it as
# seen with normal vision and simulated deuteranopia, protanopia and tritanopia (Machado et al. 2009): the first 12
# differ by at least 11 (tests/code/test_plots.py). Class 0 is dark grey. None is an error-map colour.
CLASS_COLOURS = ("#3c3c3c", "#e69f00", "#88ccee", "#117733", "#aa4499", "#ddcc77", "#332288", "#997700", "#cc6677",
                 "#6699cc", "#ffaabb", "#cc79a7", "#ee8866", "#999933", "#994455", "#bbcc33")  # fmt: skip


def class_palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours from :data:`CLASS_COLOURS`; beyond its length the list repeats, darker each
    time round, so no two classes share a colour."""
    rgb = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in CLASS_COLOURS], np.float64)
    rounds = np.arange(num_classes) // len(rgb)
    return (rgb[np.arange(num_classes) % len(rgb)] * 0.6 ** rounds[:, None]).round().astype(np.uint8)


ERROR_COLOURS = {  # error map legend: what each pixel colour means; apart under colour-vision deficiencies
    "correct": (221, 221, 221),
    "false positive (class where truth is background)": (213, 94, 0),
    "false negative (background where truth is a class)": (0, 114, 178),
    "wrong class": (240, 228, 66),
    "ignored": (0, 0, 0),
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


@functools.cache
def _palette(num_classes: int) -> list[int]:
    return class_palette(num_classes).reshape(-1).tolist()


def labels_image(mask: np.ndarray, num_classes: int) -> Image.Image:
    """The class-id mask as a palette image: its pixel values are the ids, viewers show the class colours."""
    labels = Image.fromarray(mask.astype(np.uint8, copy=False), "P")
    labels.putpalette(_palette(num_classes))
    return labels


def overlay(image: np.ndarray, mask: np.ndarray, num_classes: int, alpha: float = 0.5) -> Image.Image:
    """The image with each class painted over it in its colour; class 0 (background) and ignored pixels (any value
    that is no class) left as they are.

    Done with PIL's C kernels (palette lookup, blend, masked paste): ~1 ms for a 360x480 frame, 4x the numpy way.
    """
    base = Image.fromarray(image)
    classes = np.minimum(mask, num_classes - 1)
    painted = Image.blend(base, labels_image(classes, num_classes).convert("RGB"), alpha)
    painted.paste(base, mask=Image.fromarray((mask == 0) | (mask >= num_classes) | (mask < 0)))
    return painted


def plot_overlays(
    samples: list[tuple[str, float, np.ndarray, np.ndarray, np.ndarray]],
    class_names: Sequence[str],
    ignore_index: int,
    path: Path,
    title: str,
) -> None:
    """One row per (id, score, image, truth, prediction): image, truth, prediction and the error map."""
    palette = class_palette(len(class_names))
    rows = max(1, len(samples))
    fig, axes = plt.subplots(rows, 4, figsize=(12, 3 * rows + 0.8), squeeze=False)
    for row, (name, score, image, truth, pred) in zip(axes, samples, strict=False):
        drawn = [overlay(image, mask, len(class_names)) for mask in (truth, pred)]  # the classes over the image
        panels = (image, *drawn, error_map(pred, truth, ignore_index))
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
