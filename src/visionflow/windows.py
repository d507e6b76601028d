"""Sliding-window inference: an image larger than the model's window is scored by overlapping windows whose logits
are blended with Gaussian weights, so that a model trained on crops scores and serves whole images.

The scheme is nnU-Net's: windows overlap by ``overlap`` of their side (0.5 by default) and are spread evenly so that
the first starts at the top/left edge and the last ends at the bottom/right one; each window's logits are weighted by
a Gaussian centred on it (sigma = 1/8 of its side, the minimum clamped above zero), because a convolutional model is
least sure near the borders of what it saw; the blend is the weighted sum over the weights' sum. Where one window
covers the image, the image is scored in one forward pass exactly as the whole-image ``pad`` policy scores it
(padded to a multiple of 32, the padding sliced off), so the two give the same logits.

With ``scale`` below 1 (a model trained on crops of shrunk images, ``train.input.scale``) the image is shrunk as
training shrank it, windowed, and the logits are brought back to its full size bilinearly.

``forward`` is any callable from a uint8 (B, h, w, 3) batch to (B, C, h, w) logits (it normalises, autocasts and
moves to the device itself); ``flip`` adds horizontal-flip test-time augmentation (the mean of the logits of the
image and of its mirror, mirrored back). Nothing here knows about files, models or tracking.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from visionflow.data.transforms import pad_to, resize, round_up, scaled_size

__all__ = ["Forward", "Windows", "gaussian_weights", "sliding_window", "window_starts"]

Forward = Callable[[torch.Tensor], torch.Tensor]  # uint8 (B, h, w, 3) -> (B, C, h, w) logits

SIGMA_SCALE = 1 / 8  # sigma of the blending Gaussian, as a share of the window side (nnU-Net's value)


@dataclass(frozen=True)
class Windows:
    """How a model with the ``window`` input policy scores an image (the model's metadata carries it)."""

    size: tuple[int, int]  # the window: the crop size the model was trained at
    overlap: float = 0.5  # share of a window its neighbour covers
    flip: bool = False  # horizontal-flip test-time augmentation
    scale: float = 1.0  # the image is shrunk by this before it is windowed (as the crops were)

    @classmethod
    def of(cls, policy: str, size: Sequence[int] | None, overlap: float, flip: bool,
           scale: float = 1.0) -> Windows | None:  # fmt: skip
        """The windows of a ``window``-policy input, None for any other policy."""
        if policy != "window":
            return None
        if size is None:
            raise ValueError("input policy 'window' needs a size (the window)")
        return cls((int(size[0]), int(size[1])), float(overlap), bool(flip), float(scale))

    def logits(self, forward: Forward, image: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """(C, H, W) logits of one uint8 (H, W, 3) image at its own size (:func:`sliding_window` with these
        settings, on the image shrunk by ``scale``)."""
        if self.scale == 1:
            return sliding_window(forward, image, self.size, self.overlap, batch_size, self.flip)
        height, width = image.shape[:2]
        small, _ = resize(image, None, scaled_size(height, width, self.scale))
        logits = sliding_window(forward, small, self.size, self.overlap, batch_size, self.flip)
        return F.interpolate(logits[None], size=(height, width), mode="bilinear", align_corners=False)[0]


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Start offsets along one axis: windows of ``window`` pixels, neighbours sharing at least ``overlap`` of it,
    spread evenly from 0 to ``length - window``. One window (at 0) where it covers the length."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap {overlap}: expected 0 <= overlap < 1")
    if length <= window:
        return [0]
    stride = window * (1 - overlap)
    steps = math.ceil((length - window) / stride) + 1
    return [round(i * (length - window) / (steps - 1)) for i in range(steps)]


@functools.lru_cache(maxsize=8)
def gaussian_weights(height: int, width: int, sigma_scale: float = SIGMA_SCALE) -> torch.Tensor:
    """(height, width) float32 weights, 1 at the centre, falling off as a Gaussian with sigma = ``sigma_scale`` of
    each side; clamped to the smallest positive value so that every pixel of a window counts a little."""
    axes = []
    for side in (height, width):
        position = torch.arange(side, dtype=torch.float64) - (side - 1) / 2
        axes.append(torch.exp(-0.5 * (position / (side * sigma_scale)) ** 2))
    weights = torch.outer(*axes)
    weights /= weights.max()
    return weights.clamp(min=float(weights[weights > 0].min())).float()


def _forward(forward: Forward, batch: torch.Tensor, flip: bool) -> torch.Tensor:
    logits = forward(batch).float()
    if flip:  # mirror in, mirror back: the mean of the two views
        logits = (logits + forward(batch.flip(2)).float().flip(3)) / 2
    return logits


def _whole(forward: Forward, image: torch.Tensor, flip: bool) -> torch.Tensor:
    """One forward pass over the image padded to a multiple of 32 (as the ``pad`` policy does), padding sliced off."""
    height, width = image.shape[:2]
    padded, _ = pad_to(image, None, (round_up(height), round_up(width)), 0)
    return _forward(forward, padded.contiguous()[None], flip)[0, :, :height, :width]  # laid out as a collated batch


@torch.inference_mode()
def sliding_window(
    forward: Forward,
    image: torch.Tensor,
    window: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 8,
    flip: bool = False,
) -> torch.Tensor:
    """(C, H, W) float32 logits of one uint8 (H, W, 3) image, at its own size.

    An axis shorter than the window is scored whole along that axis (the window shrinks to its length rounded up
    to 32); windows go through ``forward`` ``batch_size`` at a time.
    """
    height, width = image.shape[:2]
    win_h, win_w = min(int(window[0]), round_up(height)), min(int(window[1]), round_up(width))
    if height <= win_h and width <= win_w:
        return _whole(forward, image, flip)
    # an axis the window over-reaches (its length is not a multiple of 32) is padded up to the window
    padded, _ = pad_to(image, None, (max(height, win_h), max(width, win_w)), 0)
    full_h, full_w = padded.shape[:2]
    rows, cols = window_starts(full_h, win_h, overlap), window_starts(full_w, win_w, overlap)
    corners = [(top, left) for top in rows for left in cols]
    total: torch.Tensor | None = None
    for first in range(0, len(corners), batch_size):
        chunk = corners[first : first + batch_size]
        batch = torch.stack([padded[t : t + win_h, left : left + win_w] for t, left in chunk])
        logits = _forward(forward, batch, flip)
        if total is None:  # accumulate where the logits are (the accelerator, if any)
            total = torch.zeros(logits.shape[1], full_h, full_w, device=logits.device)
            norm = torch.zeros(full_h, full_w, device=logits.device)
            weights = gaussian_weights(win_h, win_w).to(logits.device)
        for (top, left), piece in zip(chunk, logits, strict=True):
            total[:, top : top + win_h, left : left + win_w].addcmul_(piece, weights)
            norm[top : top + win_h, left : left + win_w] += weights
    assert total is not None  # at least one window
    return (total / norm)[:, :height, :width]
