"""The decoded-image cache: built once per set of files, memory-mapped afterwards, rebuilt when the manifest's hash of
an image or mask changes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import TINY, make_config
from visionflow.data.dataset import DecodedCache, load_rgb
from visionflow.data.masks import read_mask
from visionflow.handoffs import DatasetInfo
from visionflow.stages import prepare


def test_cache_holds_exact_pixels_is_reused_and_follows_changes(workdir: Path) -> None:
    config = make_config(TINY)
    rows = prepare.run(config).split("train")
    info = DatasetInfo.read(config.paths)
    cache = DecodedCache.open(rows, config.paths.cache, masks=info)
    assert isinstance(cache.images, np.memmap) and len(cache) == len(rows)
    for i in (0, len(rows) - 1):
        assert np.array_equal(cache.image(i), load_rgb(rows["image_path"][i]))
        assert np.array_equal(cache.mask(i), read_mask(rows["mask_path"][i], info.masks, info.ignore_index).ids)
    index = cache.directory / "index.npz"
    built = index.stat().st_mtime_ns
    again = DecodedCache.open(rows, config.paths.cache, masks=info)
    assert again.directory == cache.directory and index.stat().st_mtime_ns == built, "opened, not rebuilt"
    assert DecodedCache.open(rows.iloc[:3], config.paths.cache, masks=info).directory != cache.directory

    mask_path = rows["mask_path"][0]
    changed = read_mask(mask_path, info.masks, info.ignore_index).ids.astype(np.uint8)
    changed[0, 0] = (changed[0, 0] + 1) % 6
    Image.fromarray(changed).save(mask_path)
    rows.loc[0, "mask_sha256"] = hashlib.sha256(Path(mask_path).read_bytes()).hexdigest()  # as prepare records it
    fresh = DecodedCache.open(rows, config.paths.cache, masks=info)
    assert fresh.directory != cache.directory and np.array_equal(fresh.mask(0), changed)
    assert not list(config.paths.cache.glob("*.partial-*")), "no half-built caches left behind"
