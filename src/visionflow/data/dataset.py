"""Torch datasets over manifest rows. Images are decoded once and kept as uint8 arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "SegmentationDataset", "load_rgb", "normalise"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the statistics smp and timm encoders are trained with
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_rgb(path: str) -> np.ndarray:
    """(H, W, 3) uint8; grayscale and RGBA inputs are converted to RGB."""
    with Image.open(path) as image:
        return np.array(image.convert("RGB"))


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) scaled by the encoder statistics."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.permute(0, 3, 1, 2).float() / 255.0 - mean) / std


class SegmentationDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Items are (uint8 image (H, W, 3), int64 mask (H, W)); normalisation happens per batch on the device."""

    def __init__(
        self, rows: pd.DataFrame, augment: bool = False, seed: int = 0, size: tuple[int, int] | None = None
    ) -> None:
        self.ids = rows["id"].tolist()
        self.size = size
        pairs = zip(rows["image_path"], rows["mask_path"], strict=True)
        decoded = [self._load(i, m) for i, m in tqdm(pairs, total=len(rows), desc="decode", unit="img", leave=False)]
        self.images = [image for image, _ in decoded]
        self.masks = [mask for _, mask in decoded]
        self.augment = augment
        self.generator = torch.Generator().manual_seed(seed)

    def _load(self, image_path: str, mask_path: str) -> tuple[np.ndarray, np.ndarray]:
        """Decode once; resize to ``size`` (height, width) when set: bilinear image, nearest-neighbour mask."""
        image = load_rgb(image_path)
        with Image.open(mask_path) as mask_file:
            mask = np.array(mask_file)
        if self.size is not None and image.shape[:2] != tuple(self.size):
            height, width = self.size
            image = np.array(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
            mask = np.array(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST))
        return image, mask

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(self.images[index])
        mask = torch.from_numpy(self.masks[index].astype(np.int64))
        if self.augment and torch.rand(1, generator=self.generator).item() < 0.5:
            image, mask = image.flip(1), mask.flip(1)
        return image, mask
