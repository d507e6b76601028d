"""Figures for people: written as PNG files that DVC and MLflow both show."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = ["plot_class_distribution", "plot_confusion_matrix"]


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
