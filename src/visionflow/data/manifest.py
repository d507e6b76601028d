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


def _decode(path: Path) -> Image.Image:
    """Open and fully decode: PIL reads only the header until ``load``, and truncation shows up there."""
    image = Image.open(path)
    image.load()
    return image


_BITS = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}  # other modes: 8 bits
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
    image = _decode(path)
    gray = np.asarray(image.convert("L"), dtype=np.float32)
    return {
        "width": image.width,
        "height": image.height,
        "channels": len(image.getbands()),
        "mode": image.mode,
        "bits": _BITS.get(image.mode, 8),
        "brightness": round(float(gray.mean()), 3),
        "dhash": dhash(image),
    }


def _describe_mask(path: Path, info: DatasetInfo) -> dict[str, Any]:
    mask = _decode(path)
    row: dict[str, Any] = {
        "mask_width": mask.width,
        "mask_height": mask.height,
        "mask_mode": mask.mode,
        "mask_bits": _BITS.get(mask.mode, 8),
    }
    values = np.asarray(mask)
    if values.ndim != 2:
        raise ValueError(f"mask has {values.shape[-1]} channels; expected one channel of class ids")
    num_classes = len(info.classes)
    counts = np.bincount(values.ravel().astype(np.int64), minlength=max(num_classes, info.ignore_index + 1))
    row.update(zip(count_columns(num_classes), counts[:num_classes].tolist(), strict=True))
    invalid = np.flatnonzero(counts)
    invalid = invalid[(invalid >= num_classes) & (invalid != info.ignore_index)]
    row["px_ignore"] = int(counts[info.ignore_index])
    row["px_invalid"] = int(counts[invalid].sum())
    row["invalid_values"] = " ".join(map(str, invalid[:20].tolist())) + (" ..." if len(invalid) > 20 else "")
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
        "id": ref.name or (ref.image or ref.mask).stem,  # type: ignore[union-attr]
        "split": ref.split,
        "image_path": _rel(ref.image),
        "mask_path": _rel(ref.mask),
    }
    root = Path(info.root)
    escaping = [p for p in (ref.image, ref.mask) if p is not None and _outside(p, root)]
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
    else:
        try:
            row["mask_sha256"] = _sha256(ref.mask)
            row.update(_describe_mask(ref.mask, info))
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
