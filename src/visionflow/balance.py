"""Class weights from pixel counts. Pure functions: the balance stage does the I/O."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "WEIGHTINGS",
    "class_frequencies",
    "class_weights",
    "presence",
    "repeat_factors",
    "sampled_shares",
]


def _inverse(freq: np.ndarray, counts: np.ndarray, beta: float) -> np.ndarray:
    return 1.0 / freq


def _inverse_sqrt(freq: np.ndarray, counts: np.ndarray, beta: float) -> np.ndarray:
    return 1.0 / np.sqrt(freq)


def _median_frequency(freq: np.ndarray, counts: np.ndarray, beta: float) -> np.ndarray:
    # Eigen & Fergus (2015), as used by SegNet: median(freq) / freq_c.
    return np.median(freq) / freq


def _effective_number(freq: np.ndarray, counts: np.ndarray, beta: float) -> np.ndarray:
    # Cui et al. (2019): (1 - beta) / (1 - beta ** n_c).
    return (1.0 - beta) / (1.0 - np.power(beta, counts))


WEIGHTINGS: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    "inverse": _inverse,
    "inverse_sqrt": _inverse_sqrt,
    "median_frequency": _median_frequency,
    "effective_number": _effective_number,
}


def class_frequencies(pixel_counts: np.ndarray, image_pixels: np.ndarray, per_image: bool = False) -> np.ndarray:
    """Per-class frequency as Eigen & Fergus define it: pixels of class c / pixels of images that contain c.

    ``pixel_counts`` is (images, classes); ``image_pixels`` the labelled pixels of each image. ``per_image``
    (classification: one count per image) takes a class's share of all images instead, since the pixel rule
    would give every class 1.
    """
    counts = pixel_counts.sum(axis=0).astype(np.float64)
    if per_image:
        return counts / max(counts.sum(), 1)
    present = (pixel_counts > 0).astype(np.float64)
    exposure = (present * image_pixels[:, None]).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(exposure > 0, counts / exposure, 0.0)


def class_weights(
    pixel_counts: np.ndarray,
    image_pixels: np.ndarray,
    method: str,
    beta: float = 0.9999,
    clip: float | None = None,
    per_image: bool = False,
) -> np.ndarray:
    """Weights normalised to mean 1 over the classes that occur; absent classes get 0 (they cannot be learned).

    ``clip`` caps a weight after normalisation, so one nearly absent class cannot dominate the loss.
    ``per_image``: frequencies by image counts (see :func:`class_frequencies`).
    """
    num_classes = pixel_counts.shape[1]
    if method == "none":
        return np.ones(num_classes)
    if method not in WEIGHTINGS:
        raise ValueError(f"unknown balance.method '{method}'; choose one of none, {', '.join(WEIGHTINGS)}")
    counts = pixel_counts.sum(axis=0).astype(np.float64)
    freq = class_frequencies(pixel_counts, image_pixels, per_image)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = WEIGHTINGS[method](freq[present], counts[present], beta)
    weights[present] /= weights[present].mean()
    if clip is not None:
        weights = np.minimum(weights, clip)
    return weights


def presence(pixel_counts: np.ndarray, min_share: float) -> np.ndarray:
    """(images, classes) bool: the class covers at least ``min_share`` of the image's labelled pixels."""
    labelled = pixel_counts.sum(axis=1, keepdims=True).clip(min=1)
    return (pixel_counts > 0) & (pixel_counts / labelled >= min_share)


def repeat_factors(present: np.ndarray, threshold: float) -> np.ndarray:
    """Repeat-factor sampling (Gupta et al., LVIS 2019): r_i = max over classes c in image i of
    max(1, sqrt(t / f_c)), with f_c the share of images holding c. Images with no class get 1."""
    image_share = present.mean(axis=0)
    with np.errstate(divide="ignore"):
        per_class = np.where(image_share > 0, np.maximum(1.0, np.sqrt(threshold / image_share)), 1.0)
    factors = np.where(present, per_class[None, :], 1.0).max(axis=1, initial=1.0)
    return factors


def sampled_shares(pixel_counts: np.ndarray, present: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expected (pixel share, image share) per class when images are drawn with probability proportional to
    ``factors``: what the sampler will present, next to what is stored."""
    p = factors / factors.sum()
    pixels = (pixel_counts * p[:, None]).sum(axis=0)
    return pixels / max(pixels.sum(), 1e-12), (present * p[:, None]).sum(axis=0)
