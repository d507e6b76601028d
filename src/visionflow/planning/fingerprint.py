"""The data fingerprint: what the planner needs to know about the train split, from its decoded masks.

Object size is measured as **local thickness** (Hildebrand and Rüegsegger, J. Microscopy 1997; ImageJ/BoneJ's
"Local Thickness"): a pixel's thickness is the diameter of the largest disc that fits inside its class's region and
covers the pixel, that is twice the distance to the outside (the centre of the nearest outside pixel) from the
disc's centre, a point of the region's medial axis. A 3 px wire reads ~3-4 whatever its length or angle, a 7 px
rivet ~7-8, a 100 px plate ~100 (a bounding box would call a diagonal wire hundreds of pixels wide). It is measured
pixel by pixel, not per object, because one connected component can be thick in one place and thin in another: a
vessel tree, a crack network or a road map is one component, and the largest disc that fits anywhere in it (its
trunk) says nothing about its branches, which may hold most of its pixels. The nearest point of the medial axis
(scikit-image's ``medial_axis``) is not used as the disc: a digital medial axis sends spurs into every corner and
boundary bump, so a 40 px square would read ~21 and a 20 px disc ~8.

A decoder whose finest level has stride 8 needs objects of about 8 px or more at the scale it sees them
(PLANNING.md), which is why the planner reads the thinnest classes' widths. The width that bounds the scale is the
median thickness over a class's pixels (``width_by_pixels``: half of its pixels lie where it is at least that
thick), so that specks of label noise (a few pixels of sky between leaves) do not make a class thin, while the thin
branches of a large structure do.

How it is computed, fast enough for every train mask: a pixel is at least ``r`` thick (as a radius) when it lies
within ``r`` of a pixel at least ``r`` from the outside (it survives the opening by a disc of radius ``r``), so its
thickness is the largest radius of a fixed ladder (:data:`_RADII`) that passes this test. Below 4 px the ladder
holds every distance of the pixel grid, so widths under 8 px are exact; from 4 px on it climbs eight steps per
octave (12.5% apart at most, read at the step below), the octave 4-8 px at full resolution and each later one on
the distance map max-pooled by 2 once more, where its discs are 4-8 coarse pixels in radius. Against the
brute-force definition (random blobs; CamVid's poles, signs, people, fences, cars) a pixel is off by 0-8% on
average, 2% thin net, and medians agree within a step; a coarse pixel next to a thick part may lend its thickness
to a thin one.

Only the train split is read: no choice may depend on val or test.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["ClassPrint", "DataPrint", "fingerprint", "local_thickness", "object_widths"]

_EXACT = tuple(math.sqrt(k) for k in (1, 2, 4, 5, 8, 9, 10, 13))  # every pixel-grid distance below 4 px
_STEPS = 8  # radii per octave from 4 px on, tested at 1/2**octave resolution
_OCTAVES = 20  # radii up to 4 * 2**20 px: any image
# the ladder of radii (px) that a pixel's thickness is read from: its index is a pixel's thickness level
_RADII = np.array(
    [*_EXACT, *(4 * 2**octave * (1 + step / _STEPS) for octave in range(_OCTAVES) for step in range(_STEPS))]
)
_EPS = 1e-6  # distances are square roots of integers: compare them with a margin
_EIGHT = np.ones((3, 3), bool)  # 8-connected objects


@dataclass(frozen=True)
class ClassPrint:
    """One class over the train split. Widths in px are local thicknesses (see the module docstring)."""

    name: str
    pixel_share: float  # of the labelled (not ignored) pixels
    image_share: float  # of the images that hold at least one of its pixels
    objects_per_image: float  # median number of connected components (8-connected), over the images that hold it
    width_p10: float | None  # an object's width: the median thickness of its pixels; 10th percentile; None: no objects
    width_p50: float | None  # the median object's width (every object counts once, a speck as much as a tree)
    width_by_pixels: float | None = None  # the median thickness over all the class's pixels: what the planner reads
    # where its pixels lie: their mean position, as a share of the image's height from the top (row) and of its
    # width from the left (column), 0.5 the middle; and the share of the images holding it in which its own centre
    # lies above (left of) the middle. None: no pixels. What the augmentation rule reads.
    centre_row: float | None = None
    centre_column: float | None = None
    above_share: float | None = None
    left_share: float | None = None


@dataclass(frozen=True)
class DataPrint:
    """The train split: how many images, their sizes (p5, p50, p95 of height and width), the ignored share of
    all pixels, and each class."""

    images: int
    height: tuple[float, float, float]
    width: tuple[float, float, float]
    ignore_share: float
    classes: tuple[ClassPrint, ...]
    # the groups (data.groups: a video, a site, a camera) the train images come from; None: no groups configured, or
    # none found (every image a group of its own). What the augmentation rule reads: frames of one group repeat
    # their scene, and the model is to serve groups it has not seen
    groups: int | None = None

    def by_name(self, name: str) -> ClassPrint:
        return next(c for c in self.classes if c.name == name)


def local_thickness(region: np.ndarray) -> np.ndarray:
    """Each pixel's thickness (px) in a boolean mask: the diameter of the largest disc inside the mask that covers
    it, on the ladder of :data:`_RADII`; 0 outside the mask."""
    levels = np.full(region.shape, -1, np.int16)
    if region.any():
        box = _box(region)
        levels[box] = _levels(region[box])
    return np.where(levels >= 0, 2 * _RADII[np.maximum(levels, 0)], 0.0)


def object_widths(region: np.ndarray) -> np.ndarray:
    """The width (px) of each connected component (8-connected) of a boolean mask, in label order: the median
    local thickness of its pixels."""
    if not region.any():
        return np.zeros(0)
    return 2 * _RADII[_objects(region)[0]]


def _box(region: np.ndarray) -> tuple[slice, slice]:
    """The mask's bounding box with a margin of one (outside) pixel where the image has one: distances to the
    outside are the same inside it as in the whole image (the image border is not outside)."""
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    return slice(max(0, rows[0] - 1), rows[-1] + 2), slice(max(0, cols[0] - 1), cols[-1] + 2)


def _objects(region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each connected component's median thickness level, in label order; how many of the mask's pixels lie at
    each level) of a boolean mask that holds at least one pixel."""
    sub = region[_box(region)]
    levels = _levels(sub)
    labels, count = ndimage.label(sub, structure=_EIGHT)
    depth = int(levels.max()) + 1
    table = np.bincount(labels[sub] * depth + levels[sub], minlength=(count + 1) * depth).reshape(count + 1, depth)
    cumulative = np.cumsum(table[1:], axis=1)
    medians = np.argmax(cumulative >= cumulative[:, -1:] / 2, axis=1)  # the lower median, as _median_level
    return medians, table[1:].sum(axis=0)


def _levels(region: np.ndarray) -> np.ndarray:
    """Each pixel's thickness level (an index into :data:`_RADII`; -1 outside) of a boolean mask: the largest
    radius ``r`` such that the pixel lies within ``r`` of a pixel at least ``r`` from the outside. The radii under
    8 px are tested at full resolution, each later octave on the distance map max-pooled by 2 once more."""
    depth = ndimage.distance_transform_edt(region)
    deepest = float(depth.max()) + _EPS
    levels = np.where(region, 0, -1).astype(np.int16)
    first = len(_EXACT) + _STEPS  # the radii under 8 px
    for i in range(1, first):
        if _RADII[i] > deepest:
            return levels
        levels[_dilate(depth >= _RADII[i] - _EPS, _RADII[i]) & region] = i
    pooled = depth
    for octave in range(1, _OCTAVES):
        start = first + _STEPS * (octave - 1)
        if _RADII[start] > deepest:
            break
        pooled, factor = _pool(pooled), 2**octave
        coarse = np.full(pooled.shape, -1, np.int16)
        for i in range(start, start + _STEPS):
            if _RADII[i] > deepest:
                break
            coarse[_dilate(pooled >= _RADII[i] - _EPS, _RADII[i] / factor)] = i
        grown = coarse.repeat(factor, axis=0).repeat(factor, axis=1)[: region.shape[0], : region.shape[1]]
        np.maximum(levels, np.where(region, grown, -1), out=levels)
    return levels


def _dilate(seeds: np.ndarray, radius: float) -> np.ndarray:
    """The boolean mask grown by the open disc of ``radius`` px (offsets shorter than it): horizontal runs grown
    one pixel at a time, then each row of the disc ORed in with its run's half-width."""
    reach = math.ceil(radius - _EPS) - 1  # the largest row offset inside the disc
    half = [math.floor(math.sqrt(max(0.0, radius * radius - dy * dy - _EPS))) for dy in range(reach + 1)]
    runs = [seeds]
    for _ in range(half[0]):
        last = runs[-1]
        grown = last.copy()
        grown[:, 1:] |= last[:, :-1]
        grown[:, :-1] |= last[:, 1:]
        runs.append(grown)
    out = runs[half[0]].copy()
    for dy in range(1, reach + 1):
        run = runs[half[dy]]
        out[dy:] |= run[:-dy]
        out[:-dy] |= run[dy:]
    return out


def _pool(depth: np.ndarray) -> np.ndarray:
    """The 2x2 block maxima of a distance map (odd sides padded with outside)."""
    height, width = depth.shape
    padded = np.pad(depth, ((0, height % 2), (0, width % 2)))
    return padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2).max(axis=(1, 3))


def _median_level(counts: np.ndarray) -> int:
    """The lower median of pixels counted per thickness level."""
    cumulative = np.cumsum(counts)
    return int(np.searchsorted(cumulative, cumulative[-1] / 2))


def _width(level: int) -> float:
    return round(float(2 * _RADII[level]), 2)


def _percentiles(values: Sequence[float], points: Sequence[float]) -> tuple[float, ...]:
    return tuple(round(float(v), 2) for v in np.percentile(np.asarray(values, dtype=float), points))


def _positions(mask: np.ndarray, num: int, ignore_index: int) -> np.ndarray:
    """(2, num): per class, the sums over its pixels of their row and of their column position, each the pixel
    centre's share of the image's height or width (0 top / left, 1 bottom / right)."""
    height, width = mask.shape
    bins = num + 1  # ignored pixels (and any id beyond the classes) counted in a spare bin
    ids = np.where((mask == ignore_index) | (mask >= num), num, mask).astype(np.int64)
    per_row = np.bincount((ids + bins * np.arange(height)[:, None]).ravel(), minlength=height * bins)
    per_column = np.bincount((ids + bins * np.arange(width)[None, :]).ravel(), minlength=width * bins)
    per_row, per_column = per_row.reshape(height, bins), per_column.reshape(width, bins)
    rows = (np.arange(height) + 0.5) / height
    columns = (np.arange(width) + 0.5) / width
    return np.stack([rows @ per_row, columns @ per_column])[:, :num]


def fingerprint(masks: Iterable[np.ndarray], classes: Sequence[str], ignore_index: int) -> DataPrint:
    """The fingerprint of the train split's masks (class ids, the ignore index for unlabelled pixels)."""
    num = len(classes)
    pixels = np.zeros(num, np.int64)
    holding = np.zeros(num, np.int64)
    objects: list[list[int]] = [[] for _ in range(num)]
    widths: list[list[np.ndarray]] = [[] for _ in range(num)]  # each object's median level
    thickness = np.zeros((num, len(_RADII)), np.int64)  # pixels per class and thickness level
    position = np.zeros((2, num))  # per class, the sums of its pixels' row and column positions (shares of a side)
    sides = np.zeros((2, num), np.int64)  # per class, the images in which its centre lies above / left of the middle
    heights, side_widths, ignored, total, images = [], [], 0, 0, 0
    for mask in masks:
        images += 1
        heights.append(mask.shape[0])
        side_widths.append(mask.shape[1])
        counts = np.bincount(mask[mask != ignore_index].ravel().astype(np.int64), minlength=num)[:num]
        ignored += int((mask == ignore_index).sum())
        total += mask.size
        pixels += counts
        sums = _positions(mask, num, ignore_index)
        position += sums
        sides += (sums < 0.5 * counts) & (counts > 0)
        for c in np.flatnonzero(counts):
            medians, levels = _objects(mask == c)
            holding[c] += 1
            objects[c].append(len(medians))
            widths[c].append(medians)
            thickness[c, : len(levels)] += levels
    if not images:
        raise ValueError("fingerprint: no train masks")
    labelled = max(1, int(pixels.sum()))
    prints = []
    for c, name in enumerate(classes):
        every = 2 * _RADII[np.concatenate(widths[c])] if widths[c] else np.zeros(0)
        p10, p50 = _percentiles(every, (10, 50)) if len(every) else (None, None)
        prints.append(
            ClassPrint(
                name=name,
                pixel_share=round(float(pixels[c]) / labelled, 6),
                image_share=round(float(holding[c]) / images, 6),
                objects_per_image=float(np.median(objects[c])) if objects[c] else 0.0,
                width_p10=p10,
                width_p50=p50,
                width_by_pixels=_width(_median_level(thickness[c])) if len(every) else None,
                centre_row=round(float(position[0, c] / pixels[c]), 4) if pixels[c] else None,
                centre_column=round(float(position[1, c] / pixels[c]), 4) if pixels[c] else None,
                above_share=round(float(sides[0, c] / holding[c]), 4) if holding[c] else None,
                left_share=round(float(sides[1, c] / holding[c]), 4) if holding[c] else None,
            )
        )
    return DataPrint(
        images=images,
        height=_percentiles(heights, (5, 50, 95)),  # type: ignore[arg-type]
        width=_percentiles(side_widths, (5, 50, 95)),  # type: ignore[arg-type]
        ignore_share=round(ignored / max(1, total), 6),
        classes=tuple(prints),
    )
