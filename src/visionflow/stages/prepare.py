"""prepare: find or generate the dataset, give each image its group, carve val where asked, and describe every
image in the manifest."""

from __future__ import annotations

import shutil

import pandas as pd

from visionflow.config import Config
from visionflow.data.groups import assign_groups, carve_val
from visionflow.data.manifest import build_manifest
from visionflow.data.sources import collect_samples
from visionflow.handoffs import Manifest, count_columns, usable

__all__ = ["run"]


def run(config: Config) -> Manifest:
    out = config.paths.prepared
    if out.exists():
        shutil.rmtree(out)  # the folder is this stage's output alone: nothing stale survives a rerun
    out.mkdir(parents=True)
    samples, info = collect_samples(config)
    samples = carve_val(assign_groups(samples, config.data.groups), config.data.val_split)
    manifest = build_manifest(samples, info)
    manifest.write(config.paths)
    info.write(config.paths)
    splits = ", ".join(f"{k} {v}" for k, v in manifest.per_split.items())
    where = f"{info.source} '{info.root}'"
    print(f"prepare: {len(manifest.rows)} images ({splits}) from {where} -> {config.paths.manifest}")
    if config.data.groups.configured:
        _report_groups(manifest.rows)
    if config.data.val_split is not None:
        _report_carved(config, manifest.rows, info.classes)
    if manifest.unreadable:
        print(f"prepare: {manifest.unreadable} rows could not be read; validate will report them")
    return manifest


def _report_groups(rows: pd.DataFrame) -> None:
    alone = rows["group_from"].eq("id")
    grouped = rows[~alone]
    counts = grouped.groupby("split")["group"].nunique()
    per_split = ", ".join(f"{split} {counts[split]}" for split in sorted(counts.index, key=_split_rank))
    line = f"prepare: {grouped['group'].nunique()} groups over {len(grouped)} images ({per_split})"
    if alone.any():
        line += f"; {int(alone.sum())} image(s) matched no group, each its own (validate: group_unmatched)"
    print(line)


def _split_rank(split: str) -> tuple[int, str]:
    return ({"train": 0, "val": 1, "test": 2}.get(split, 3), split)


def _report_carved(config: Config, rows: pd.DataFrame, classes: tuple[str, ...]) -> None:
    """How many images and groups went to val (every val image was carved: the data had none), and per class
    the train and val images holding it, since the stable per-group draw does not stratify by class."""
    spec = config.data.val_split
    assert spec is not None
    by_split = rows.groupby("split")["group"].nunique() if rows["group"].notna().any() else None
    counts = {split: int((rows["split"] == split).sum()) for split in ("val", "train")}
    groups = "" if by_split is None else f" ({by_split.get('val', 0)} groups; train keeps {by_split.get('train', 0)})"
    print(
        f"prepare: val carved out of train (data.val_split: share {spec.share} by {spec.by}, seed {spec.seed}): "
        f"{counts['val']} images to val, {counts['train']} stay in train{groups}"
    )
    readable = rows[usable(rows)]
    holding = readable[count_columns(len(classes))].fillna(0).gt(0)
    table = pd.DataFrame({split: holding[readable["split"] == split].sum() for split in ("train", "val")})
    width = max(len(c) for c in classes)
    print("prepare: images holding each class, train / val:")
    for name, (train, val) in zip(classes, table.itertuples(index=False), strict=True):
        note = "  (in train, not in val)" if train and not val else ""
        print(f"  {name:<{width}}  {train:>6}  {val:>6}{note}")
