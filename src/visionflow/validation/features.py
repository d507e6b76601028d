"""The frames the checks read, computed from the manifest. Pure pandas and numpy: the validate stage does the I/O.

Each function builds what one frame of checks needs (:data:`visionflow.validation.checks.Frame`): the manifest rows
with derived columns (duplicate groups, exact and near; smallest side; labelled pixels), the accepted images and
groups per split (with the groups a split shares with train), per-class statistics of the train split (and the
val images holding each class), and drift against the statistics of the last accepted dataset.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
import pandas as pd

from visionflow.handoffs import DriftRow, count_columns

__all__ = [
    "ROTATING",
    "SPLIT_ORDER",
    "as_loaded",
    "class_table",
    "dataset_statistics",
    "drift_rows",
    "drift_table",
    "hamming",
    "hash_bytes",
    "mark_duplicates",
    "mark_same_names",
    "row_features",
    "split_table",
]

SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}  # which copy of a duplicate is kept: the training one


def _keep_order(frame: pd.DataFrame) -> pd.Series:
    """Sort key: train before val before test, then by file, so the kept copy is predictable."""
    rank = frame["split"].map(SPLIT_ORDER).fillna(len(SPLIT_ORDER)).astype(int)
    return rank.astype(str).str.zfill(2) + "|" + frame["image_path"].fillna(frame["mask_path"]).fillna("")


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)


def hash_bytes(hashes: list[str]) -> np.ndarray:
    """(n, bytes) uint8 array from hex hashes of equal length."""
    return np.array([np.frombuffer(bytes.fromhex(h), np.uint8) for h in hashes])


def hamming(one: np.ndarray, many: np.ndarray) -> np.ndarray:
    """Hamming distances from one packed hash to each of ``many`` (memory grows with n, not n squared)."""
    return _POPCOUNT[np.bitwise_xor(many, one)].sum(axis=1)


def mark_duplicates(frame: pd.DataFrame, near_distance: int) -> pd.DataFrame:
    """Add ``duplicate_of`` (same bytes) and ``near_duplicate_of`` / ``near_leak_of`` (similar dHash).

    In each group the first copy in (train, val, test) order is kept and the others point at it. A near
    duplicate in another split than its original is leakage (``near_leak_of``); one in the same split is
    only redundant (``near_duplicate_of``). ``near_distance < 0`` turns near-duplicate search off.
    """
    out = frame.copy()
    out["duplicate_of"] = pd.Series(pd.NA, index=out.index, dtype="string")
    out["near_duplicate_of"] = pd.Series(pd.NA, index=out.index, dtype="string")
    out["near_leak_of"] = pd.Series(pd.NA, index=out.index, dtype="string")
    order = out.assign(_key=_keep_order(out)).sort_values("_key").index
    hashed = out.loc[order].dropna(subset=["sha256"])
    for _, group in hashed.groupby("sha256", sort=False):
        if len(group) > 1:
            out.loc[group.index[1:], "duplicate_of"] = group["image_path"].iloc[0]
    if near_distance < 0:
        return out
    candidates = out.loc[order]
    candidates = candidates[candidates["dhash"].notna() & out.loc[order, "duplicate_of"].isna()]
    if len(candidates) < 2:
        return out
    packed = hash_bytes(candidates["dhash"].tolist())
    index, splits, paths = candidates.index.to_numpy(), candidates["split"].to_numpy(), candidates["image_path"]
    for i in range(1, len(index)):
        distances = hamming(packed[i], packed[:i])
        close = np.flatnonzero(distances <= near_distance)
        if close.size:
            j = close[0]
            column = "near_leak_of" if splits[i] != splits[j] else "near_duplicate_of"
            out.loc[index[i], column] = f"{paths.iloc[j]} (distance {distances[j]})"
    return out


def mark_same_names(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``same_name_as``: the first file of an image name that appears again in a later split."""
    out = frame.copy()
    out["same_name_as"] = pd.Series(pd.NA, index=out.index, dtype="string")
    ordered = out.assign(_key=_keep_order(out)).sort_values("_key")
    for _, group in ordered.groupby("id", sort=False):
        later = group[group["split"] != group["split"].iloc[0]]
        out.loc[later.index, "same_name_as"] = group["file"].iloc[0]
    return out


ROTATING = (5, 6, 7, 8)  # EXIF orientations that swap width and height when applied


def row_features(frame: pd.DataFrame, num_classes: int, near_distance: int, upright: bool = False) -> pd.DataFrame:
    """The manifest plus the derived columns the row checks read. ``upright``: images are turned as their EXIF
    orientation says, so their sizes are the upright ones (what the mask must match)."""
    out = mark_duplicates(frame, near_distance)
    if upright:
        turned = out["orientation"].isin(ROTATING)
        out.loc[turned, ["width", "height"]] = out.loc[turned, ["height", "width"]].to_numpy()
    out["file"] = out["image_path"].fillna(out["mask_path"])
    out = mark_same_names(out)
    out["min_side"] = out[["width", "height"]].min(axis=1)
    out["labelled_px"] = out[count_columns(num_classes)].sum(axis=1, min_count=1)
    return out


def as_loaded(accepted: pd.DataFrame, upright: bool) -> pd.DataFrame:
    """The accepted rows as later stages load them: ``orientation`` is what loading applies (1: as stored, for
    every image unless ``upright``), sizes are the loaded ones."""
    out = accepted.copy()
    if not upright:
        out["orientation"] = 1
    return out


def split_table(accepted: pd.DataFrame, required: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """One row per required split and per split the data has (a required split it lacks has 0 images): accepted
    images, distinct groups (null where no groups are configured) and, for a split other than train, the groups it
    shares with train, biggest in train first (``group_leak``)."""
    present = sorted(accepted["split"].dropna().unique(), key=lambda s: (SPLIT_ORDER.get(s, len(SPLIT_ORDER)), s))
    splits = list(dict.fromkeys([*required, *present]))
    counts = accepted["split"].value_counts()
    grouped = bool(accepted["group"].notna().any())
    by_split = accepted.groupby("split")["group"]
    return pd.DataFrame(
        {
            "split": splits,
            "accepted_images": [int(counts.get(s, 0)) for s in splits],
            "groups": [float(by_split.nunique().get(s, 0)) if grouped else np.nan for s in splits],
            "shared_with_train": [_shared_with_train(accepted, s) if grouped else None for s in splits],
        }
    )


SHARED_LISTED = 5  # shared groups a split's group_leak names before "and N more"


def _shared_with_train(accepted: pd.DataFrame, split: str) -> str | None:
    """The groups ``split`` shares with train, with their images on both sides; None where it shares none."""
    if split == "train":
        return None
    train = accepted.loc[accepted["split"] == "train", "group"].value_counts()
    here = accepted.loc[accepted["split"] == split, "group"].value_counts()
    shared = sorted(here.index.intersection(train.index), key=lambda g: (-train[g], g))
    if not shared:
        return None
    named = [f"{g} ({train[g]} train images, {here[g]} {split})" for g in shared[:SHARED_LISTED]]
    more = len(shared) - SHARED_LISTED
    return ", ".join(named) + (f" and {more} more groups" if more > 0 else "")


def class_table(accepted: pd.DataFrame, classes: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """One row per class over the accepted train split: pixels, pixel share, images holding it; and the val images
    holding it (``classes_in_val``; null for a class train lacks, or where there is no val split)."""
    pixels_of = _class_counts(accepted, "train", len(classes))
    pixels = pixels_of.sum(axis=0)
    total = pixels.sum()
    train_images = (pixels_of > 0).sum(axis=0).astype(np.int64)
    in_val = _class_counts(accepted, "val", len(classes))
    val_images = (in_val > 0).sum(axis=0).astype(float)
    val_images[(train_images == 0) | (len(in_val) == 0)] = np.nan
    return pd.DataFrame(
        {
            "class_id": range(len(classes)),
            "class": list(classes),
            "train_pixels": pixels.astype(np.int64),
            "train_share": pixels / total if total else np.zeros(len(classes)),
            "train_images": train_images,
            "val_images": val_images,
        }
    )


def _class_counts(accepted: pd.DataFrame, split: str, num_classes: int) -> np.ndarray:
    """(images, classes) pixel counts of one split (classification: one-hot rows)."""
    rows = accepted[accepted["split"] == split]
    return rows[count_columns(num_classes)].to_numpy(dtype=np.int64) if len(rows) else np.zeros((0, num_classes))


def dataset_statistics(accepted: pd.DataFrame, classes: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """What drift is measured on: per-class pixel shares, brightness and size distributions."""
    table = class_table(accepted, classes)
    return {
        "images": len(accepted),
        "class_share": dict(zip(table["class"], table["train_share"].round(6).tolist(), strict=True)),
        "brightness_mean": round(float(accepted["brightness"].mean()), 3),
        "brightness_std": round(float(accepted["brightness"].std(ddof=0)), 3),
        "width_mean": round(float(accepted["width"].mean()), 3),
        "height_mean": round(float(accepted["height"].mean()), 3),
    }


def drift_table(
    current: dict[str, Any] | None, reference: dict[str, Any] | None, thresholds: dict[str, float]
) -> pd.DataFrame:
    """One row per statistic: current, reference, change and whether it exceeds its threshold.

    Class shares compare absolute share points; brightness compares the mean in grey levels; size compares the
    relative change of mean width and height. Without a reference (the first run) or without accepted data
    (``current`` None) the table is empty, with its columns.
    """
    rows: list[dict[str, Any]] = []
    if current is not None and reference is not None:
        for name, share in current["class_share"].items():
            before = reference.get("class_share", {}).get(name, 0.0)
            rows.append(_drift_row(f"class_share:{name}", share, before, share - before, thresholds["class_share"]))
        delta = current["brightness_mean"] - reference["brightness_mean"]
        rows.append(
            _drift_row(
                "brightness_mean",
                current["brightness_mean"],
                reference["brightness_mean"],
                delta,
                thresholds["brightness"],
            )
        )
        for side in ("width_mean", "height_mean"):
            before = reference[side] or 1.0
            rows.append(
                _drift_row(side, current[side], reference[side], current[side] / before - 1, thresholds["size"])
            )
    return pd.DataFrame(rows, columns=[f.name for f in fields(DriftRow)])


def drift_rows(table: pd.DataFrame) -> tuple[DriftRow, ...]:
    """The drift table as the summary's typed rows."""
    return tuple(DriftRow(**record) for record in table.to_dict(orient="records"))


def _drift_row(name: str, current: float, reference: float, change: float, threshold: float) -> dict[str, Any]:
    return {
        "statistic": name,
        "current": round(current, 6),
        "reference": round(reference, 6),
        "change": round(change, 6),
        "threshold": threshold,
        "exceeds": bool(abs(change) > threshold),
    }
