"""The built-in classification dataset: scikit-learn's handwritten digits (1,797 real 8x8 scans, 10 classes).

Written as an ImageFolder tree (``<split>/<digit>/digit_NNNN.png``), upscaled to ``image_size`` so that
ordinary timm backbones (which downsample by 32) see more than one pixel. The split is stratified and
deterministic from its seed: the same params give the same bytes on every machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from visionflow.config import DigitsConfig

__all__ = ["CLASSES", "materialise"]

CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))


def _val_mask(targets: np.ndarray, config: DigitsConfig) -> np.ndarray:
    """The same share of every digit in val."""
    rng = np.random.default_rng([config.seed, 104729])
    is_val = np.zeros(len(targets), bool)
    for digit in np.unique(targets):
        members = np.flatnonzero(targets == digit)
        count = max(1, round(len(members) * config.val_fraction))
        is_val[rng.choice(members, size=count, replace=False)] = True
    return is_val


def materialise(config: DigitsConfig, out_dir: Path) -> list[tuple[str, Path]]:
    """Write every digit as an RGB PNG under ``out_dir/<split>/<digit>/``; returns (split, path) per image."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    scans = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # 0-16 ink levels -> 0-255
    is_val = _val_mask(digits.target, config)
    written: list[tuple[str, Path]] = []
    for index, (scan, digit) in enumerate(zip(scans, digits.target, strict=True)):
        split = "val" if is_val[index] else "train"
        path = out_dir / split / CLASSES[digit] / f"digit_{index:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        big = Image.fromarray(scan, "L").resize((config.image_size, config.image_size), Image.Resampling.BILINEAR)
        big.convert("RGB").save(path, optimize=False)
        written.append((split, path))
    return written
