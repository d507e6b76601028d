"""From config and manifest rows to datasets and loaders: the one place train and evaluate build them."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import pandas as pd
from torch.utils.data import DataLoader, Sampler

from visionflow.config import Config, InputConfig
from visionflow.data.augment import Augment
from visionflow.data.dataset import DecodedCache, ImageDataset
from visionflow.data.transforms import pad_collate
from visionflow.handoffs import DatasetInfo

__all__ = ["ShardSampler", "make_dataset", "make_loader"]


def make_dataset(
    config: Config, info: DatasetInfo, rows: pd.DataFrame, spec: InputConfig, train: bool, rare: Sequence[int] = ()
) -> ImageDataset:
    """Training items (augmented, seeded, at ``spec``'s size; crops centred on the ``rare`` classes at
    ``train.rare_crops``) or evaluation items (``spec``'s size with the original masks as targets, since
    segmentation is scored at the original resolution)."""
    classification = info.task == "classification"
    cache = DecodedCache.open(rows, config.paths.cache, None if classification else info)
    labels = rows["label"].to_numpy(dtype=np.int64) if classification else None
    augment, seed = None, 0
    if train:
        if config.train.augment == "auto":
            raise ValueError("train.augment is auto: train runs the planned config (visionflow.stages.train.planned)")
        augment = Augment(config.train.augment.model_dump())
        seed = config.project.seed
    return ImageDataset(
        rows,
        cache,
        labels=labels,
        policy=spec.policy,
        size=spec.size,
        ignore_index=info.ignore_index,
        augment=augment,
        seed=seed,
        original_masks=not train,
        rare=rare if train else (),
        rare_share=config.train.rare_crops if train else 0.0,
        scale=spec.scale,
    )


class ShardSampler(Sampler[int]):
    """Every ``world``-th index from ``rank``, in order: evaluation split across DDP ranks, nothing repeated."""

    def __init__(self, size: int, rank: int = 0, world: int = 1) -> None:
        self.indices = list(range(rank, size, world))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)


def make_loader(
    dataset: ImageDataset, batch_size: int, sampler: Sampler[int] | None = None, drop_last: bool = False
) -> DataLoader:
    """Batches of (images, targets, sizes); mixed sizes are padded (ignore index in masks)."""
    collate = partial(pad_collate, ignore_index=dataset.ignore_index)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, drop_last=drop_last)
