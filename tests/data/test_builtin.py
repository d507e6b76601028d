from __future__ import annotations

from pathlib import Path

import numpy as np

from visionflow.config import BuiltinConfig
from visionflow.data import builtin

CONFIG = BuiltinConfig(num_images=120, image_size=64, seed=0)


def _masks(config: BuiltinConfig) -> tuple[list[np.ndarray], list[np.ndarray]]:
    _, has_rare = builtin._splits(config)
    pairs = [builtin.generate_sample(i, config, bool(has_rare[i])) for i in range(config.num_images)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = builtin.materialise(BuiltinConfig(num_images=12, seed=5), tmp_path / "a")
    b = builtin.materialise(BuiltinConfig(num_images=12, seed=5), tmp_path / "b")
    for (_, ia, ma), (_, ib, mb) in zip(a, b, strict=True):
        assert ia.read_bytes() == ib.read_bytes() and ma.read_bytes() == mb.read_bytes()
    c = builtin.materialise(BuiltinConfig(num_images=12, seed=6), tmp_path / "c")
    assert a[0][1].read_bytes() != c[0][1].read_bytes()


def test_classes_and_rare_class() -> None:
    assert len(builtin.CLASSES) >= 5 and builtin.CLASSES[0] == "background"
    _, masks = _masks(CONFIG)
    rare = builtin.CLASSES.index(builtin.RARE_CLASS)
    with_rare = sum(bool((m == rare).any()) for m in masks)
    assert 0 < with_rare <= 0.10 * len(masks)
    for cls in range(1, len(builtin.CLASSES)):
        assert any((m == cls).any() for m in masks), builtin.CLASSES[cls]


def test_rare_class_is_in_both_splits() -> None:
    is_val, has_rare = builtin._splits(CONFIG)
    assert has_rare[is_val].any() and has_rare[~is_val].any()
    assert abs(is_val.mean() - CONFIG.val_fraction) < 0.02


def test_no_intensity_threshold_separates_shapes_from_background() -> None:
    """The best single threshold on brightness (either direction) finds shapes poorly: a model is needed."""
    images, masks = _masks(CONFIG)
    gray = np.concatenate([im.mean(axis=2).ravel() for im in images])
    fg = np.concatenate([(m > 0).ravel() for m in masks])
    best = 0.0
    for t in np.linspace(0, 255, 52):
        for pred in (gray > t, gray <= t):
            inter, union = (pred & fg).sum(), (pred | fg).sum()
            best = max(best, inter / union)
    assert best < 0.35, f"a threshold reaches foreground IoU {best:.2f}"
