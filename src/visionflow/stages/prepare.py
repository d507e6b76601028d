"""prepare: find or generate the dataset and describe every image in the manifest."""

from __future__ import annotations

import shutil

from visionflow.config import Config
from visionflow.data.manifest import build_manifest
from visionflow.data.sources import collect_samples
from visionflow.handoffs import Manifest

__all__ = ["run"]


def run(config: Config) -> Manifest:
    out = config.paths.prepared
    if out.exists():
        shutil.rmtree(out)  # the folder is this stage's output alone: nothing stale survives a rerun
    out.mkdir(parents=True)
    samples, info = collect_samples(config)
    manifest = build_manifest(samples, info)
    manifest.write(config.paths)
    info.write(config.paths)
    splits = ", ".join(f"{k} {v}" for k, v in manifest.per_split.items())
    where = f"{info.source} '{info.root}'"
    print(f"prepare: {len(manifest.rows)} images ({splits}) from {where} -> {config.paths.manifest}")
    if manifest.unreadable:
        print(f"prepare: {manifest.unreadable} rows could not be read; validate will report them")
    return manifest
