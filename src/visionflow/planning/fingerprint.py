"""The data fingerprint: what the planner needs to know about the train split, from its decoded masks.

Object size is measured as **width**: twice the largest distance from a pixel of a connected component to the
component's outside, the diameter of the largest disc that fits in it. A 3 px wire has width ~3-4 whatever its
length or angle, a 7 px rivet ~7, a 100 px plate ~100; a bounding box would call a diagonal wire hundreds of
pixels wide. A decoder whose finest level has stride 8 needs objects of about 8 px or more at the scale it sees
them (PLANNING.md), which is why the planner reads the thinnest objects' widths. The width that bounds the scale
is weighted by pixels (``width_by_pixels``: half of a class's pixels lie in objects at least that wide), so that
specks of label noise, a few pixels of sky between leaves, do not count as the class's typical object.

Only the train split is read: no choice may depend on val or test.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["ClassPrint", "DataPrint", "fingerprint", "object_widths"]


@dataclass(frozen=True)
class ClassPrint:
    """One class over the train split."""

    name: str
    pixel_share: float  # of the labelled (not ignored) pixels
    image_share: float  # of the images that hold at least one of its pixels
    objects_per_image: float  # median number of connected components, over the images that hold it
    width_p10: float | None  # object widths in px (see the module docstring): 10th percentile; None: no objects
    width_p50: float | None  # median
    width_by_pixels: float | None = None  # the median width over the class's pixels (objects weighted by area)


@dataclass(frozen=True)
class DataPrint:
    """The train split: how many images, their sizes (p5, p50, p95 of height and width), the ignored share of
    all pixels, and each class."""

    images: int
    height: tuple[float, float, float]
    width: tuple[float, float, float]
    ignore_share: float
    classes: tuple[ClassPrint, ...]

    def by_name(self, name: str) -> ClassPrint:
        return next(c for c in self.classes if c.name == name)


def object_widths(region: np.ndarray) -> np.ndarray:
    """The width (px) of each connected component (8-connected) of a boolean mask, in label order."""
    return _objects(region)[0]


def _objects(region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(widths, areas in px) of the connected components (8-connected) of a boolean mask, in label order."""
    labels, count = ndimage.label(region, structure=np.ones((3, 3), bool))
    if not count:
        return np.zeros(0), np.zeros(0, np.int64)
    depth = ndimage.distance_transform_edt(region)
    widths = 2 * np.asarray(ndimage.maximum(depth, labels, index=np.arange(1, count + 1)), dtype=float)
    return widths, np.bincount(labels.ravel(), minlength=count + 1)[1:]


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return round(float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)]), 2)


def _percentiles(values: Sequence[float], points: Sequence[float]) -> tuple[float, ...]:
    return tuple(round(float(v), 2) for v in np.percentile(np.asarray(values, dtype=float), points))


def fingerprint(masks: Iterable[np.ndarray], classes: Sequence[str], ignore_index: int) -> DataPrint:
    """The fingerprint of the train split's masks (class ids, the ignore index for unlabelled pixels)."""
    num = len(classes)
    pixels = np.zeros(num, np.int64)
    holding = np.zeros(num, np.int64)
    objects: list[list[int]] = [[] for _ in range(num)]
    widths: list[list[np.ndarray]] = [[] for _ in range(num)]
    areas: list[list[np.ndarray]] = [[] for _ in range(num)]
    heights, side_widths, ignored, total, images = [], [], 0, 0, 0
    for mask in masks:
        images += 1
        heights.append(mask.shape[0])
        side_widths.append(mask.shape[1])
        counts = np.bincount(mask[mask != ignore_index].ravel().astype(np.int64), minlength=num)[:num]
        ignored += int((mask == ignore_index).sum())
        total += mask.size
        pixels += counts
        for c in np.flatnonzero(counts):
            found, area = _objects(mask == c)
            holding[c] += 1
            objects[c].append(len(found))
            widths[c].append(found)
            areas[c].append(area)
    if not images:
        raise ValueError("fingerprint: no train masks")
    labelled = max(1, int(pixels.sum()))
    prints = []
    for c, name in enumerate(classes):
        every = np.concatenate(widths[c]) if widths[c] else np.zeros(0)
        p10, p50 = _percentiles(every, (10, 50)) if len(every) else (None, None)
        by_pixels = _weighted_median(every, np.concatenate(areas[c])) if len(every) else None
        prints.append(
            ClassPrint(
                name=name,
                pixel_share=round(float(pixels[c]) / labelled, 6),
                image_share=round(float(holding[c]) / images, 6),
                objects_per_image=float(np.median(objects[c])) if objects[c] else 0.0,
                width_p10=p10,
                width_p50=p50,
                width_by_pixels=by_pixels,
            )
        )
    return DataPrint(
        images=images,
        height=_percentiles(heights, (5, 50, 95)),  # type: ignore[arg-type]
        width=_percentiles(side_widths, (5, 50, 95)),  # type: ignore[arg-type]
        ignore_share=round(ignored / max(1, total), 6),
        classes=tuple(prints),
    )
