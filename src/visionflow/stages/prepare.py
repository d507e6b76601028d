"""prepare: find or generate the dataset and describe every image in the manifest."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from visionflow.config import Config
from visionflow.data.manifest import build_manifest, usable, write_dataset_info, write_manifest
from visionflow.data.sources import collect_samples

__all__ = ["PrepareResult", "run"]


@dataclass(frozen=True)
class PrepareResult:
    images: int
    per_split: dict[str, int]
    unreadable: int  # rows with an error (reported by validate)


def run(config: Config) -> PrepareResult:
    out = config.paths.prepared
    if out.exists():
        shutil.rmtree(out)  # the folder is this stage's output alone: nothing stale survives a rerun
    out.mkdir(parents=True)
    samples, info = collect_samples(config)
    manifest = build_manifest(samples, info)
    write_manifest(manifest, config.paths.manifest)
    write_dataset_info(info, config.paths.dataset_info)
    per_split = {str(k): int(v) for k, v in manifest["split"].value_counts(sort=False).items()}
    unreadable = int((~usable(manifest)).sum())
    splits = ", ".join(f"{k} {v}" for k, v in per_split.items())
    print(f"prepare: {len(manifest)} images ({splits}) from {info.source} '{info.root}' -> {config.paths.manifest}")
    if unreadable:
        print(f"prepare: {unreadable} rows could not be read; validate will report them")
    return PrepareResult(len(manifest), per_split, unreadable)
