"""ImageNet-C's corruptions on uint8 images: graded by severity, seeded per image, each doing what it names."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from visionflow.corruptions import CORRUPTIONS, Corruption, plasma_fractal


@pytest.fixture
def image() -> torch.Tensor:
    """A 96x128 scene: a smooth colour gradient with a sharp bright square (edges for blur and JPEG to soften)."""
    yy, xx = np.mgrid[0:96, 0:128]
    rgb = np.stack([xx * 1.5, yy * 2.0, 255 - xx * 1.2], axis=-1)
    rgb[30:60, 40:80] = (230, 200, 40)
    return torch.from_numpy(rgb.clip(0, 255).astype(np.uint8))


def distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().mean())


def decorrelation(a: torch.Tensor, b: torch.Tensor) -> float:
    """1 - the correlation of the pixel values: how much of the scene a haze hides, whatever it does to brightness."""
    return 1 - float(torch.corrcoef(torch.stack([a.float().flatten(), b.float().flatten()]))[0, 1])


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_changes_the_image_more_at_a_higher_severity(image: torch.Tensor, name: str) -> None:
    mild, middle, worst = (Corruption(name, severity)(image, 0) for severity in (1, 3, 5))
    for out in (mild, middle, worst):
        assert out.shape == image.shape and out.dtype == torch.uint8
    measure = decorrelation if name == "fog" else distance  # fog rescales brightness as it thickens
    assert 0 < measure(mild, image) < measure(middle, image) < measure(worst, image)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_an_image_is_corrupted_the_same_way_whatever_the_order_it_is_read_in(image: torch.Tensor, name: str) -> None:
    corruption = Corruption(name, 3, seed=7)
    first, again = corruption(image, 5), corruption(image, 5)
    assert torch.equal(first, again)
    if name in ("gaussian_noise", "fog"):  # the random ones: another image index, other draws
        assert not torch.equal(first, corruption(image, 6))
        assert not torch.equal(first, Corruption(name, 3, seed=8)(image, 5))


def test_brightness_raises_the_hsv_value_and_keeps_hue_and_saturation(image: torch.Tensor) -> None:
    out = Corruption("brightness", 3)(image, 0)  # +0.3 on the value
    for y, x in ((10, 10), (40, 50), (90, 120)):
        before = colorsys.rgb_to_hsv(*(image[y, x].float() / 255).tolist())
        after = colorsys.rgb_to_hsv(*(out[y, x].float() / 255).tolist())
        assert after[2] == pytest.approx(min(1.0, before[2] + 0.3), abs=1 / 255)
        assert after[1] == pytest.approx(before[1], abs=0.02)
        assert after[0] == pytest.approx(before[0], abs=0.02)
    black = Corruption("brightness", 1)(torch.zeros(4, 4, 3, dtype=torch.uint8), 0)
    assert black.unique().tolist() == [round(0.1 * 255)], "black becomes grey of the added value"


def test_contrast_shrinks_each_channel_towards_its_mean(image: torch.Tensor) -> None:
    out = Corruption("contrast", 1)(image, 0).float()  # factor 0.4
    x = image.float()
    assert torch.allclose(out.mean(dim=(0, 1)), x.mean(dim=(0, 1)), atol=0.6)
    assert torch.allclose(out.std(dim=(0, 1)), 0.4 * x.std(dim=(0, 1)), rtol=0.02)


def test_noise_has_imagenet_c_standard_deviation() -> None:
    grey = torch.full((200, 200, 3), 128, dtype=torch.uint8)
    out = Corruption("gaussian_noise", 1)(grey, 0).float() / 255
    assert float(out.std()) == pytest.approx(0.08, rel=0.05)


def test_blur_scales_with_the_image_and_keeps_flat_regions() -> None:
    flat = torch.full((64, 64, 3), 90, dtype=torch.uint8)
    assert torch.equal(Corruption("gaussian_blur", 5)(flat, 0), flat)
    edge = torch.zeros(224, 224, 3, dtype=torch.uint8)
    edge[:, 112:] = 255
    blurred = Corruption("gaussian_blur", 1)(edge, 0)[100, :, 0].float()  # sigma 1 px at 224 px
    ramp = int(((blurred > 5) & (blurred < 250)).sum())
    big = torch.zeros(448, 448, 3, dtype=torch.uint8)
    big[:, 224:] = 255
    wide = Corruption("gaussian_blur", 1)(big, 0)[200, :, 0].float()  # sigma 2 px: the same share of the image
    assert ramp >= 2 and int(((wide > 5) & (wide < 250)).sum()) >= 2 * ramp - 1


def test_fog_is_a_smooth_haze_brightening_dark_pixels() -> None:
    cloud = plasma_fractal(64, 2.0, np.random.default_rng(0))
    assert cloud.shape == (64, 64) and cloud.min() == 0 and cloud.max() == 1
    dark = torch.full((48, 48, 3), 20, dtype=torch.uint8)
    dark[0, 0] = 200  # the brightest pixel sets the level fog keeps
    out = Corruption("fog", 3)(dark, 0).float()
    assert float(out[1:, 1:].mean()) > 20


def test_unknown_corruption_or_severity_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown corruption 'rain'"):
        Corruption("rain", 1)
    with pytest.raises(ValueError, match="severity 6"):
        Corruption("fog", 6)
