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
    split, has_rare = builtin._splits(CONFIG)
    is_val = split == "val"
    assert has_rare[is_val].any() and has_rare[~is_val].any()
    assert abs(is_val.mean() - CONFIG.val_fraction) < 0.02
    assert set(split) == {"train", "val"}


def test_a_test_split_leaves_the_val_split_as_it_was() -> None:
    split, _ = builtin._splits(CONFIG)
    with_test, has_rare = builtin._splits(CONFIG.model_copy(update={"test_fraction": 0.2}))
    assert np.array_equal(with_test == "val", split == "val"), "the same val images"
    is_test = with_test == "test"
    assert abs(is_test.mean() - 0.2) < 0.02 and not (is_test & (split == "val")).any()
    assert has_rare[is_test].any() and has_rare[with_test == "train"].any()


def test_wires_keep_their_widths_in_pixels_at_any_image_size() -> None:
    """Rivets are RIVET_DIAMETER px discs and wires WIRE_WIDTH px lines at 512 and at 1024 px: a model that sees
    the image shrunk loses them."""
    from scipy import ndimage

    rivet, wire = builtin.WIRE_CLASSES.index("rivet"), builtin.WIRE_CLASSES.index("wire")
    areas, half_widths = {}, {}
    for size in (512, 1024):
        config = BuiltinConfig(kind="wires", image_size=size, num_images=10, seed=1)
        image, mask = builtin.generate_sample(0, config, has_rare=False)
        assert image.shape == (size, size, 3) and set(np.unique(mask)) <= set(range(len(builtin.WIRE_CLASSES)))
        labels, count = ndimage.label(mask == rivet)
        sizes = np.bincount(labels.ravel())[1:]
        areas[size] = float(np.median(sizes[sizes > 20]))  # whole rivets (a wire or another rivet may cut some)
        wires = mask == wire
        depth = ndimage.distance_transform_edt(wires)[wires]  # how far inside a wire each of its pixels lies
        half_widths[size] = float(np.percentile(depth, 99))
        assert count >= 5 and wires.any()
    expected = np.pi * (builtin.RIVET_DIAMETER / 2) ** 2
    assert all(abs(a - expected) / expected < 0.35 for a in areas.values()), areas
    assert all(h <= builtin.WIRE_WIDTH / 2 + 1 for h in half_widths.values()), half_widths


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
