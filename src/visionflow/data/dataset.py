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

    def __init__(self, rows: pd.DataFrame, augment: bool = False, seed: int = 0) -> None:
        self.ids = rows["id"].tolist()
        self.images = [load_rgb(p) for p in tqdm(rows["image_path"], desc="decode", unit="img", leave=False)]
        self.masks = [np.array(Image.open(p)) for p in rows["mask_path"]]
        self.augment = augment
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(self.images[index])
        mask = torch.from_numpy(self.masks[index].astype(np.int64))
        if self.augment and torch.rand(1, generator=self.generator).item() < 0.5:
            image, mask = image.flip(1), mask.flip(1)
        return image, mask
