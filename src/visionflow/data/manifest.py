"""The manifest: one row per image, the contract between stages.

Building it decodes every file completely once (so a truncated file shows up here, not halfway through
training), hashes its bytes, and counts mask pixels per class. A file that cannot be read becomes a row with
its ``error`` filled in: it is reported by validate, never dropped.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from visionflow.data.masks import UNMAPPED, open_decoded, read_mask
from visionflow.data.sources import SampleRef
from visionflow.handoffs import INTEGER_COLUMNS, DatasetInfo, Manifest, count_columns, manifest_columns

__all__ = ["build_manifest", "dhash"]


def _rel(path: Path | None) -> str | None:
    return None if path is None else Path(os.path.relpath(path)).as_posix()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_BITS = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}  # other modes: 8 bits
EXIF_ORIENTATION = 0x0112  # the EXIF tag: 1 as stored, 2-8 mirrored and/or rotated when shown
HASH_SIZE = 16  # dHash grid: 16 x 16 = 256 bits, so consecutive video frames stay apart but resized copies match


def dhash(image: Image.Image, size: int = HASH_SIZE) -> str:
    """Difference hash (hex): the sign of horizontal brightness steps on a small grey thumbnail.

    Survives resizing and re-encoding, so near-duplicates have a small Hamming distance.
    """
    thumb = np.asarray(image.convert("L").resize((size + 1, size), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (thumb[:, 1:] > thumb[:, :-1]).ravel()
    return np.packbits(bits).tobytes().hex()


def _outside(path: Path, root: Path) -> bool:
    """True when the file's real location (links followed) is not inside the real data root."""
    return not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


def _describe_image(path: Path) -> dict[str, Any]:
    image = open_decoded(path)
    gray = np.asarray(image.convert("L"), dtype=np.float32)
    return {
        "width": image.width,
        "height": image.height,
        "channels": len(image.getbands()),
        "mode": image.mode,
        "bits": _BITS.get(image.mode, 8),
        "brightness": round(float(gray.mean()), 3),
        "orientation": int(image.getexif().get(EXIF_ORIENTATION, 1)),
        "dhash": dhash(image),
    }


def _describe_mask(path: Path, info: DatasetInfo, region: Path | None) -> dict[str, Any]:
    mask = read_mask(path, info.masks, info.ignore_index, region)
    height, width = mask.ids.shape
    row: dict[str, Any] = {
        "mask_width": width,
        "mask_height": height,
        "mask_mode": mask.mode,
        "mask_bits": _BITS.get(mask.mode, 8),
    }
    num_classes = len(info.classes)
    ids = mask.ids.ravel()
    counts = np.bincount(ids[ids >= 0], minlength=max(num_classes, info.ignore_index + 1))
    row.update(zip(count_columns(num_classes), counts[:num_classes].tolist(), strict=True))
    invalid = np.flatnonzero(counts)
    invalid = invalid[(invalid >= num_classes) & (invalid != info.ignore_index)]
    row["px_ignore"] = int(counts[info.ignore_index])
    row["px_invalid"] = int(counts[invalid].sum() + (ids == UNMAPPED).sum())
    named = [*mask.unmapped, *map(str, invalid.tolist())]  # values the table lacks, or ids beyond the classes
    row["invalid_values"] = " ".join(named[:20]) + (" ..." if len(named) > 20 else "")
    return row


def _describe_label(ref: SampleRef, info: DatasetInfo) -> dict[str, Any]:
    """Classification: the class id and a one-hot count row (so class tables work alike for both tasks)."""
    if ref.label is None:
        return {"label_error": "no class: the image is not in a class folder / has an empty label"}
    if ref.label not in info.classes:
        return {"label_error": f"label '{ref.label}' is not a class ({', '.join(info.classes)})"}
    label = info.classes.index(ref.label)
    counts = [int(c == label) for c in range(len(info.classes))]
    return {"label": label, **dict(zip(count_columns(len(info.classes)), counts, strict=True))} | {
        "px_ignore": 0,
        "px_invalid": 0,
    }


def _describe_row(ref: SampleRef, info: DatasetInfo) -> dict[str, Any]:
    """Everything the checks need about one sample; problems go to the error columns, never raise."""
    row: dict[str, Any] = {
        "id": ref.id,
        "split": ref.split,
        "group": ref.group,
        "group_from": ref.group_from,
        "image_path": _rel(ref.image),
        "mask_path": _rel(ref.mask),
        "region_path": _rel(ref.region),
    }
    root = Path(info.root)
    escaping = [p for p in (ref.image, ref.mask, ref.region) if p is not None and _outside(p, root)]
    if escaping:  # never read a file outside the data root
        row["path_error"] = f"outside the data root '{info.root}': {', '.join(_rel(p) for p in escaping)}"
        return row
    if ref.image is None:
        row["image_error"] = "no image for this mask"
    elif not ref.image.is_file():
        row["image_error"] = "image file not found"
    else:
        row["sha256"] = _sha256(ref.image)
        try:
            row.update(_describe_image(ref.image))
        except Exception as exc:  # any decoder failure is a property of the file
            row["image_error"] = f"image does not decode: {exc or type(exc).__name__}"
    if info.task == "classification":
        row.update(_describe_label(ref, info))
    elif ref.mask is None:
        row["mask_error"] = "no mask for this image"
    elif ref.region_expected and ref.region is None:
        row["mask_error"] = "no region mask for this image"
    else:
        try:
            row["mask_sha256"] = _sha256(ref.mask)
            if ref.region is not None:
                row["region_sha256"] = _sha256(ref.region)
            row.update(_describe_mask(ref.mask, info, ref.region))
        except Exception as exc:
            row["mask_error"] = f"mask does not decode: {exc or type(exc).__name__}"
    return row


def build_manifest(samples: list[SampleRef], info: DatasetInfo, workers: int = 4) -> Manifest:
    """Describe every sample (decoding runs in threads: PIL releases the GIL while it decodes)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        described = pool.map(lambda r: _describe_row(r, info), samples)
        rows = list(tqdm(described, total=len(samples), desc="manifest", unit="img"))
    num_classes = len(info.classes)
    frame = pd.DataFrame(rows).reindex(columns=manifest_columns(num_classes))
    return Manifest(frame.astype({c: "Int64" for c in [*INTEGER_COLUMNS, *count_columns(num_classes)]}))
