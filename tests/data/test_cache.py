"""The decoded-image cache: built once per set of files, memory-mapped afterwards, rebuilt when files change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import TINY, make_config
from visionflow.data.dataset import DecodedCache, load_mask, load_rgb
from visionflow.data.manifest import read_manifest, split_rows
from visionflow.stages import prepare


def test_cache_holds_exact_pixels_is_reused_and_follows_changes(workdir: Path) -> None:
    config = make_config(TINY)
    prepare.run(config)
    rows = split_rows(read_manifest(config.paths.manifest), "train", config.paths.manifest)
    cache = DecodedCache.open(rows, config.paths.cache, with_masks=True)
    assert isinstance(cache.images, np.memmap) and len(cache) == len(rows)
    for i in (0, len(rows) - 1):
        assert np.array_equal(cache.image(i), load_rgb(rows["image_path"][i]))
        assert np.array_equal(cache.mask(i), load_mask(rows["mask_path"][i]))
    index = cache.directory / "index.npz"
    built = index.stat().st_mtime_ns
    again = DecodedCache.open(rows, config.paths.cache, with_masks=True)
    assert again.directory == cache.directory and index.stat().st_mtime_ns == built, "opened, not rebuilt"
    assert DecodedCache.open(rows.iloc[:3], config.paths.cache, with_masks=True).directory != cache.directory

    mask_path = rows["mask_path"][0]
    changed = load_mask(mask_path).copy()
    changed[0, 0] = (changed[0, 0] + 1) % 6
    Image.fromarray(changed).save(mask_path)
    fresh = DecodedCache.open(rows, config.paths.cache, with_masks=True)
    assert fresh.directory != cache.directory and np.array_equal(fresh.mask(0), changed)
    assert not list(config.paths.cache.glob("*.partial-*")), "no half-built caches left behind"
