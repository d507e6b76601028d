"""Common image corruptions at graded severities, for scoring how a model holds up on images worse than its val
split: sensor noise, defocus, compression, lighting and fog.

The corruptions and their constants are ImageNet-C's (Hendrycks and Dietterich, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations", ICLR 2019; the tables of ``make_imagenet_c.py`` in
github.com/hendrycks/robustness, as packaged in bethgelab/imagecorruptions), at its severities 1, 3 and 5 of 5.
ImageNet-C corrupts 224 px images: the one spatial constant, the blur's sigma, is scaled by the image's short side
over 224, so a blur covers the same share of a CamVid frame as of an ImageNet image; fog's fractal is drawn at the
image's own size, as there. Each image's randomness (noise, fog) comes from a generator seeded by the seed, the
corruption and the image's index (not the severity: an image's severities differ by the constants alone), so a
score never depends on the order images are read in.

Every function takes and returns an (H, W, 3) uint8 tensor; the maths runs in [0, 1] floats and is rounded back,
as ImageNet-C's saved images are.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

__all__ = ["CORRUPTIONS", "IMAGENET_C_SIDE", "SEVERITIES", "Corruption", "corrupt", "plasma_fractal"]

SEVERITIES = (1, 3, 5)  # of ImageNet-C's five: the mildest, the middle and the worst
IMAGENET_C_SIDE = 224  # the image side ImageNet-C's spatial constants are for
# ImageNet-C's constants, severities 1-5 (make_imagenet_c.py)
GAUSSIAN_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)  # standard deviation of additive noise on [0, 1]
GAUSSIAN_BLUR = (1, 2, 3, 4, 6)  # sigma, px at 224 px
JPEG_QUALITY = (25, 18, 15, 10, 7)
BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # added to the HSV value
CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # factor on each channel's distance from its mean
FOG = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))  # (fog strength, the fractal's roughness decay)


def _floats(image: torch.Tensor) -> torch.Tensor:
    return image.float() / 255.0


def _bytes(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8)


def gaussian_noise(image: torch.Tensor, severity: int, rng: np.random.Generator) -> torch.Tensor:
    noise = torch.from_numpy(rng.normal(0.0, GAUSSIAN_NOISE[severity - 1], size=tuple(image.shape)))
    return _bytes(_floats(image) + noise.float())


def gaussian_blur(image: torch.Tensor, severity: int, rng: np.random.Generator) -> torch.Tensor:
    sigma = GAUSSIAN_BLUR[severity - 1] * min(image.shape[:2]) / IMAGENET_C_SIDE
    radius = max(1, math.ceil(4 * sigma))  # scikit-image's truncate=4, as ImageNet-C's blur
    side = min(2 * radius + 1, 2 * (min(image.shape[:2]) // 2) - 1)  # reflect padding needs a kernel inside the image
    blurred = TF.gaussian_blur(_floats(image).permute(2, 0, 1), [side, side], [sigma, sigma])
    return _bytes(blurred.permute(1, 2, 0))


def jpeg_compression(image: torch.Tensor, severity: int, rng: np.random.Generator) -> torch.Tensor:
    return TF.jpeg(image.permute(2, 0, 1).contiguous(), JPEG_QUALITY[severity - 1]).permute(1, 2, 0).contiguous()


def brightness(image: torch.Tensor, severity: int, rng: np.random.Generator) -> torch.Tensor:
    """The HSV value raised by the constant (hue and saturation kept): every channel scales by the new value over
    the old, a black pixel becomes grey."""
    x = _floats(image)
    value = x.amax(dim=2, keepdim=True)
    raised = (value + BRIGHTNESS[severity - 1]).clamp(max=1.0)
    return _bytes(torch.where(value > 0, x * raised / value.clamp_min(1e-12), raised))


def contrast(image: torch.Tensor, severity: int, rng: np.random.Generator) -> torch.Tensor:
    x = _floats(image)
    means = x.mean(dim=(0, 1), keepdim=True)
    return _bytes((x - means) * CONTRAST[severity - 1] + means)


def plasma_fractal(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """A (size, size) height map in [0, 1] by the diamond-square algorithm (``size`` a power of two): each halving of
    the step adds random offsets ``decay`` times smaller, so a larger decay gives smoother clouds."""
    grid = np.zeros((size, size), dtype=np.float64)
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        corners = grid[0:size:step, 0:size:step]
        # squares: each centre from its four corners
        total = corners + np.roll(corners, -1, axis=0)
        total = total + np.roll(total, -1, axis=1)
        grid[half:size:step, half:size:step] = total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)
        # diamonds: each edge midpoint from the two corners and the two centres beside it
        centres = grid[half:size:step, half:size:step]
        across = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        grid[0:size:step, half:size:step] = across / 4 + wibble * rng.uniform(-wibble, wibble, across.shape)
        down = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        grid[half:size:step, 0:size:step] = down / 4 + wibble * rng.uniform(-wibble, wibble, down.shape)
        step, wibble = half, wibble / decay
    grid -= grid.min()
    return grid / max(grid.max(), 1e-12)


def fog(image: torch.Tensor, severity: int, rng: np.random.Generator) -> torch.Tensor:
    """A fractal haze added to the image, then the whole rescaled so its brightest pixel keeps its level."""
    strength, decay = FOG[severity - 1]
    height, width = image.shape[:2]
    size = 1 << max(1, math.ceil(math.log2(max(height, width))))
    haze = torch.from_numpy(plasma_fractal(size, decay, rng)[:height, :width, None]).float()
    x = _floats(image)
    top = float(x.max())
    return _bytes((x + strength * haze) * top / (top + strength))


CORRUPTIONS: dict[str, Callable[[torch.Tensor, int, np.random.Generator], torch.Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
    "jpeg_compression": jpeg_compression,
    "brightness": brightness,
    "contrast": contrast,
    "fog": fog,
}


@dataclass(frozen=True)
class Corruption:
    """One corruption at one severity, seeded: called with an image and its index, as the dataset reads it."""

    name: str
    severity: int
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {self.name!r}; choose from {', '.join(CORRUPTIONS)}")
        if not 1 <= self.severity <= 5:
            raise ValueError(f"corruption severity {self.severity} is not 1-5")

    def __call__(self, image: torch.Tensor, index: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, list(CORRUPTIONS).index(self.name), index])
        return corrupt(image, self.name, self.severity, rng)


def corrupt(image: torch.Tensor, name: str, severity: int, rng: np.random.Generator) -> torch.Tensor:
    """``image`` (H, W, 3) uint8 under corruption ``name`` at ``severity`` (1-5), drawing from ``rng``."""
    return CORRUPTIONS[name](image, severity, rng)
