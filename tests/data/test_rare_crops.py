"""Training crops centred on rare classes: at ``train.rare_crops: 1`` every crop of an image holding a rare class
shows it; at 0 the crops are uniform and often miss it; evaluation never crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import make_config
from visionflow.data.loading import make_dataset
from visionflow.handoffs import AcceptedManifest, ClassWeights, DatasetInfo
from visionflow.stages import balance, prepare, validate

SETTINGS = {
    "data.builtin.num_images": 40,
    "data.builtin.image_size": 128,
    "train.input": {"size": [32, 32], "policy": "crop"},
    "train.augment.hflip": 0.0,
}


def share_showing_rare(share: float) -> tuple[float, int]:
    """Over three epochs of crops of the train images that hold a rare class: the share of crops that show one."""
    config = make_config(SETTINGS | {"train.rare_crops": share})
    info, weights = DatasetInfo.read(config.paths), ClassWeights.read(config.paths)
    rare = weights.rare_ids()
    rows = AcceptedManifest.read(config.paths).split("train")
    dataset = make_dataset(config, info, rows, config.train.input, train=True, rare=rare)
    holding = [i for i in range(len(dataset)) if np.isin(dataset.cache.mask(i), rare).any()]
    shown = []
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for i in holding:
            _, mask, sizes = dataset[i]
            assert tuple(mask.shape) == (32, 32) and sizes.tolist() == [32, 32, 128, 128]
            shown.append(bool(np.isin(mask.numpy(), rare).any()))
    return float(np.mean(shown)), len(holding)


def test_rare_crops_show_a_rare_class_and_uniform_ones_often_do_not(workdir: Path) -> None:
    config = make_config(SETTINGS)
    for stage in (prepare, validate, balance):
        stage.run(config)
    rare = ClassWeights.read(config.paths).rare_ids()
    names = DatasetInfo.read(config.paths).classes
    assert rare and names.index("background") not in rare, f"rare: {[names[i] for i in rare]}"
    always, holding = share_showing_rare(1.0)
    uniform, _ = share_showing_rare(0.0)
    assert holding >= 10 and always == 1.0, always
    assert uniform < 0.9, f"uniform 32x32 crops of 128x128 images miss small objects; showed one in {uniform:.2f}"
