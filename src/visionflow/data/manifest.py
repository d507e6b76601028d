"""The manifest: one row per image, the contract between stages.

Building it decodes every file completely once (so a truncated file shows up here, not halfway through
training), hashes its bytes, and counts mask pixels per class. A file that cannot be read becomes a row with
its ``error`` filled in: it is reported by validate, never dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from visionflow.data.sources import DatasetInfo, SampleRef

__all__ = [
    "build_manifest",
    "count_columns",
    "read_dataset_info",
    "read_manifest",
    "split_rows",
    "write_dataset_info",
    "write_manifest",
]


def count_columns(num_classes: int) -> list[str]:
    """Names of the per-class pixel count columns, in class-id order."""
    return [f"px_{c}" for c in range(num_classes)]


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


def _describe_row(ref: SampleRef, info: DatasetInfo) -> dict[str, Any]:
    num_classes = len(info.classes)
    row: dict[str, Any] = {
        "id": (ref.image or ref.mask).stem,  # type: ignore[union-attr]
        "split": ref.split,
        "image_path": _rel(ref.image),
        "mask_path": _rel(ref.mask),
    }
    errors: list[str] = []
    if ref.image is None:
        errors.append("mask has no matching image")
    else:
        row["sha256"] = _sha256(ref.image)
        try:
            image = _decode(ref.image)
            row.update(width=image.width, height=image.height, channels=len(image.getbands()), mode=image.mode)
        except Exception as exc:
            errors.append(f"image does not decode: {exc}")
    if ref.mask is None:
        errors.append("image has no matching mask")
    else:
        try:
            mask = _decode(ref.mask)
            row.update(mask_width=mask.width, mask_height=mask.height, mask_mode=mask.mode)
            values = np.asarray(mask)
            if values.ndim != 2:
                errors.append(f"mask has {values.shape[-1]} channels; expected one channel of class ids")
            else:
                counts = np.bincount(values.ravel().astype(np.int64), minlength=num_classes)
                row.update(zip(count_columns(num_classes), counts[:num_classes].tolist(), strict=True))
                ignored = int(counts[info.ignore_index]) if info.ignore_index < len(counts) else 0
                invalid = np.flatnonzero(counts)
                invalid = invalid[(invalid >= num_classes) & (invalid != info.ignore_index)]
                row["px_ignore"] = ignored
                row["px_invalid"] = int(counts[invalid].sum())
                row["invalid_values"] = " ".join(map(str, invalid.tolist()))
        except Exception as exc:
            errors.append(f"mask does not decode: {exc}")
    row["error"] = "; ".join(errors) or None
    return row


def build_manifest(samples: list[SampleRef], info: DatasetInfo, workers: int = 4) -> pd.DataFrame:
    """Describe every sample (decoding runs in threads: PIL releases the GIL while it decodes)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        rows = list(
            tqdm(
                pool.map(lambda r: _describe_row(r, info), samples),
                total=len(samples),
                desc="manifest",
                unit="img",
            )
        )
    frame = pd.DataFrame(rows)
    columns = [
        "id",
        "split",
        "image_path",
        "mask_path",
        "width",
        "height",
        "channels",
        "mode",
        "mask_width",
        "mask_height",
        "mask_mode",
        "sha256",
        *count_columns(len(info.classes)),
        "px_ignore",
        "px_invalid",
        "invalid_values",
        "error",
    ]
    frame = frame.reindex(columns=columns)
    integer_columns = [
        "width",
        "height",
        "channels",
        "mask_width",
        "mask_height",
        *count_columns(len(info.classes)),
        "px_ignore",
        "px_invalid",
    ]
    return frame.astype({c: "Int64" for c in integer_columns})


def write_manifest(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def read_manifest(path: Path) -> pd.DataFrame:
    """Read the manifest that prepare wrote; a missing file says which stage makes it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found; run `visionflow prepare` (or `dvc repro prepare`)")
    return pd.read_csv(
        path, dtype={"id": str, "invalid_values": str, "error": str, "sha256": str}, keep_default_na=True
    )


def write_dataset_info(info: DatasetInfo, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(info), indent=2) + "\n", encoding="utf-8")


def read_dataset_info(path: Path) -> DatasetInfo:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dataset info not found; run `visionflow prepare`")
    raw = json.loads(path.read_text(encoding="utf-8"))
    return DatasetInfo(
        source=raw["source"],
        root=raw["root"],
        classes=tuple(raw["classes"]),
        ignore_index=int(raw["ignore_index"]),
    )


def split_rows(manifest: pd.DataFrame, split: str, source: Path) -> pd.DataFrame:
    """The readable rows of one split; an empty split is an error that names the manifest."""
    rows = manifest[(manifest["split"] == split) & manifest["error"].isna()]
    if rows.empty:
        raise ValueError(f"{source}: split '{split}' has no readable images")
    return rows.reset_index(drop=True)
