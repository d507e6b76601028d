"""Figures for everyone: class and error colours that readers with a colour-vision deficiency tell apart, and
overlays that paint the classes over the image."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from visionflow.plots import ERROR_COLOURS, class_palette, overlay

# Machado, Oliveira and Fernandes (2009), severity 1, on linear RGB
SIMULATIONS = {
    "normal": np.eye(3),
    "deuteranopia": np.array(
        [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]]
    ),
    "protanopia": np.array(
        [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]]
    ),
    "tritanopia": np.array(
        [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]]
    ),
}
SEEN_APART = 10.0  # CIELAB distance (Delta E 1976) that two colours keep in every simulated view


def _lab(rgb: np.ndarray, simulation: np.ndarray) -> np.ndarray:
    c = rgb.astype(np.float64) / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    linear = np.clip(linear @ simulation.T, 0, 1)
    to_xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = linear @ to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def _closest_pair(colours: np.ndarray) -> tuple[float, str]:
    worst = (np.inf, "")
    for view, simulation in SIMULATIONS.items():
        lab = _lab(colours, simulation)
        for i, j in itertools.combinations(range(len(colours)), 2):
            worst = min(worst, (float(np.linalg.norm(lab[i] - lab[j])), f"{view}: colours {i} and {j}"))
    return worst


@pytest.mark.parametrize("classes", [6, 12])
def test_class_colours_stay_apart_under_colour_vision_deficiencies(classes: int) -> None:
    distance, where = _closest_pair(class_palette(classes))
    assert distance >= SEEN_APART, where


def test_error_colours_stay_apart_and_differ_from_every_class_colour() -> None:
    errors = np.array(list(ERROR_COLOURS.values()), np.uint8)
    distance, where = _closest_pair(errors)
    assert distance >= SEEN_APART, where
    classes = {tuple(c) for c in class_palette(16)}
    assert not classes & {tuple(c) for c in errors}


def test_more_classes_than_colours_never_share_one() -> None:
    palette = class_palette(40)
    assert len({tuple(c) for c in palette}) == 40


def test_overlay_paints_classes_over_the_image_and_leaves_background_and_ignored_pixels() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    mask = np.zeros((8, 8), np.int64)
    mask[:4, :4], mask[4:, 4:], mask[:4, 4:] = 1, 2, 255  # class 1, class 2, ignored
    drawn = np.asarray(overlay(image, mask, 3)).astype(np.int64)
    palette = class_palette(3).astype(np.int64)
    untouched = (mask == 0) | (mask == 255)
    assert np.array_equal(drawn[untouched], image[untouched])
    for c in (1, 2):
        expected = (image[mask == c].astype(np.int64) + palette[c]) / 2  # blended half and half
        assert np.abs(drawn[mask == c] - expected).max() <= 1
