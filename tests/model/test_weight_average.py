"""The weights' moving average: timm's update with its warm-up, scored beside the weights, the better one kept."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.conftest import TINY, make_config
from visionflow.engine import WeightAverage
from visionflow.handoffs import ModelMeta
from visionflow.models import load_model
from visionflow.stages import balance, prepare, train, validate


def test_the_average_starts_as_the_weights_then_follows_them_by_the_warmed_up_decay() -> None:
    model = torch.nn.Linear(3, 2)
    average = WeightAverage(model, decay=0.999)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    average.update(model)  # step 1: decay 0, the average is the weights
    assert torch.equal(average.module.weight, model.weight)
    before = average.module.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    average.update(model)  # step 2: decay 1 - 2 ** -0.75, far below 0.999 yet
    decay = 1 - 2**-WeightAverage.WARMUP_POWER
    assert torch.allclose(average.module.weight, decay * before + (1 - decay) * model.weight)
    assert not torch.equal(average.module.weight, model.weight)
    saved = average.state_dict()
    fresh = WeightAverage(torch.nn.Linear(3, 2), decay=0.999)
    fresh.module.load_state_dict(start)
    fresh.load_state_dict(saved)
    assert fresh.steps == 2 and torch.equal(fresh.module.weight, average.module.weight)


def test_each_epoch_scores_both_and_keeps_the_better(workdir: Path) -> None:
    config = make_config(TINY | {"train.epochs": 3})
    for stage in (prepare, validate, balance):
        stage.run(config)
    meta = train.run(config, resume="never")
    history = pd.read_csv(config.paths.history)
    assert {"val_miou", "ema_val_miou", "averaged"} <= set(history.columns)
    better = history[["val_miou", "ema_val_miou"]].max(axis=1)
    assert history["val_score"].tolist() == pytest.approx(better.tolist())
    assert history["averaged"].tolist() == (history["ema_val_miou"] > history["val_miou"]).astype(float).tolist()
    best = history.loc[history["val_score"].idxmax()]
    assert meta.epoch == best["epoch"] and meta.score == pytest.approx(best["val_score"])
    assert meta.averaged == bool(best["averaged"])
    _, saved = load_model(config.paths.weights)
    assert saved == meta and ModelMeta.read(config.paths).averaged == meta.averaged


def test_ema_decay_null_trains_the_weights_alone(workdir: Path) -> None:
    config = make_config(TINY | {"train.epochs": 1, "train.ema_decay": None})
    for stage in (prepare, validate, balance):
        stage.run(config)
    meta = train.run(config, resume="never")
    assert not meta.averaged
    assert "ema_val_miou" not in pd.read_csv(config.paths.history).columns
    assert "average" not in torch.load(config.paths.checkpoint, weights_only=True)
