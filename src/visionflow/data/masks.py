"""Masks as they are stored -> class ids: the one place a mask file is read, for the manifest and for training.

A mask is read as stored (palette indices for palette PNGs and GIFs, values for grey and 16-bit masks), then
mapped by the dataset's :class:`MaskCode`: as it is (``ids``), through a grey-value table (``values``: 0/255
masks), or through an RGB colour table (``colors``: colour-coded masks, palette images converted to RGB first). An
optional region mask, the same size, marks with zeros the pixels that are not to be scored: they become the ignore
index. Stored values or colours missing from the table are returned by name, so that validate names them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from visionflow.handoffs import MaskCode

__all__ = ["UNMAPPED", "ReadMask", "open_decoded", "read_mask"]

UNMAPPED = -1  # the id of a pixel whose stored value or colour is not in the table


@dataclass(frozen=True)
class ReadMask:
    ids: np.ndarray  # (H, W) int64 class ids; the ignore index; UNMAPPED where the table has no entry
    unmapped: tuple[str, ...]  # stored values or colours not in the table, most frequent first
    mode: str  # the stored PIL mode (L, P, RGB, I;16, ...)


def open_decoded(path: Path) -> Image.Image:
    """Open and fully decode (truncation shows up here, not later)."""
    image = Image.open(path)
    image.load()
    return image


def _lookup(codes: np.ndarray, table: dict[int, int]) -> np.ndarray:
    """Map integer codes through ``table``; codes it lacks become UNMAPPED."""
    unique, inverse = np.unique(codes.ravel(), return_inverse=True)
    targets = np.array([table.get(int(u), UNMAPPED) for u in unique], dtype=np.int64)
    return targets[inverse].reshape(codes.shape)


def _missing(codes: np.ndarray, ids: np.ndarray, name: Callable[[int], str]) -> tuple[str, ...]:
    """The codes of the pixels left UNMAPPED, by name, most pixels first."""
    unique, counts = np.unique(codes[ids == UNMAPPED], return_counts=True)
    return tuple(name(int(unique[i])) for i in np.argsort(-counts, kind="stable"))


def _colour_name(code: int) -> str:
    return f"#{code:06x}"


def read_mask(path: str | Path, code: MaskCode, ignore_index: int, region: str | Path | None = None) -> ReadMask:
    """The mask at ``path`` as class ids. Raises ``ValueError`` (naming what is wrong) for a mask that cannot be
    mapped: several channels without a colour table, or a region mask of another size."""
    stored = open_decoded(Path(path))
    if code.kind == "colors":
        rgb = np.asarray(stored.convert("RGB"), dtype=np.int64)
        codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        ids = _lookup(codes, {int(key[1:], 16): target for key, target in code.table})
    else:
        codes = np.asarray(stored)
        if codes.ndim != 2:
            raise ValueError(
                f"mask has {codes.shape[-1]} channels; expected one channel of class ids "
                "(colour-coded masks: map their colours with data.masks.colors)"
            )
        mapped = code.kind == "values"
        ids = _lookup(codes, {int(key): target for key, target in code.table}) if mapped else codes.astype(np.int64)
    if region is not None:
        inside = np.asarray(open_decoded(Path(region)))
        inside = inside.any(axis=2) if inside.ndim == 3 else inside != 0  # any non-zero channel is inside
        if inside.shape != ids.shape:
            raise ValueError(
                f"region mask {Path(region).name} is {inside.shape[1]}x{inside.shape[0]}, "
                f"the mask {ids.shape[1]}x{ids.shape[0]}"
            )
        ids = np.where(inside, ids, ignore_index)
    unmapped = () if code.kind == "ids" else _missing(codes, ids, _colour_name if code.kind == "colors" else str)
    return ReadMask(ids, unmapped, stored.mode)
