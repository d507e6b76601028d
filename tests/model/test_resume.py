"""A training killed mid-way and resumed ends with the same weights as one that was never interrupted."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from tests.conftest import TINY, make_config
from visionflow import training as train_module  # the epoch loop the stage runs
from visionflow.errors import ConfigError
from visionflow.handoffs import TrainingRun
from visionflow.stages import balance, prepare, train, validate


def final_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_kill_after_epoch_one_then_resume_matches_an_uninterrupted_run(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(TINY | {"train.epochs": 3, "train.checkpoint_minutes": 0})  # a checkpoint every epoch
    for stage in (prepare, validate, balance):
        stage.run(config)
    reference = train.run(config, resume="never")
    expected = final_weights(config.paths.checkpoint)
    expected_average = torch.load(config.paths.checkpoint, weights_only=True)["average"]
    assert config.train.ema_decay is not None and expected_average["steps"] > 0, "the default trains an average"

    real_epoch = train_module.train_one_epoch
    calls = {"count": 0}

    def killed_in_epoch_two(*args: object, **kwargs: object) -> dict[str, float]:
        calls["count"] += 1
        if calls["count"] == 2:
            raise KeyboardInterrupt("killed")
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", killed_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train.run(config, resume="never")
    interrupted = torch.load(config.paths.checkpoint, weights_only=True)["state"]
    assert interrupted["epoch"] == 1
    monkeypatch.setattr(train_module, "train_one_epoch", real_epoch)

    resumed = train.run(config)  # what `dvc repro` does after a kill: resume automatically
    actual = final_weights(config.paths.checkpoint)
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[k], expected[k]) for k in expected), "resumed weights differ"
    average = torch.load(config.paths.checkpoint, weights_only=True)["average"]
    assert average["steps"] == expected_average["steps"]
    weights, reference_weights = average["weights"], expected_average["weights"]
    assert all(torch.equal(weights[k], reference_weights[k]) for k in reference_weights), "the average differs"
    assert resumed == reference, "the same model, epoch and score as the uninterrupted run"
    run_id = TrainingRun.read(config.paths).run_id
    assert run_id == interrupted["run_id"], "the resumed training logs into the run it started"
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    assert len(client.get_metric_history(run_id, "train/val_miou")) == 3


def test_resume_requires_an_unfinished_checkpoint_of_the_same_params(workdir: Path) -> None:
    config = make_config(TINY | {"train.epochs": 1})
    for stage in (prepare, validate, balance):
        stage.run(config)
    with pytest.raises(ConfigError, match="no checkpoint"):
        train.run(config, resume="require")
    train.run(config)
    with pytest.raises(ConfigError, match="already complete"):
        train.run(config, resume="require")
    other = make_config(TINY | {"train.epochs": 2, "train.lr": 0.001})
    with pytest.raises(ConfigError, match="other params or data"):
        train.run(other, resume="require")


def test_cosine_schedule_warms_up_then_decays(workdir: Path) -> None:
    config = make_config(TINY | {"train.epochs": 4, "train.schedule": "cosine", "train.warmup_epochs": 1.0})
    for stage in (prepare, validate, balance):
        stage.run(config)
    train.run(config)
    lrs = [row["lr"] for row in torch.load(config.paths.checkpoint, weights_only=True)["state"]["history"]]
    assert lrs[0] == pytest.approx(config.train.lr, rel=1e-6), "warmup ends at the peak after one epoch"
    assert lrs[0] > lrs[1] > lrs[2] > lrs[3] >= 0


def test_an_unreadable_or_old_checkpoint_means_a_fresh_start(workdir: Path) -> None:
    config = make_config(TINY | {"train.epochs": 1})
    for stage in (prepare, validate, balance):
        stage.run(config)
    config.paths.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {}, "epoch": 3}, config.paths.checkpoint)  # an older layout
    assert train.run(config).epochs == 1
    config.paths.checkpoint.write_bytes(b"not a checkpoint")
    assert train.run(config).epochs == 1


def test_the_checkpoint_waits_for_its_interval_and_always_holds_the_last_epoch(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(TINY | {"train.epochs": 3, "train.checkpoint_minutes": 60})
    for stage in (prepare, validate, balance):
        stage.run(config)
    saved: list[int] = []
    real_save = train_module.save_checkpoint

    def counted(path: Path, **kwargs: object) -> None:
        saved.append(kwargs["state"].epoch)  # type: ignore[attr-defined]
        real_save(path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(train_module, "save_checkpoint", counted)
    train.run(config, resume="never")
    assert saved == [3], "an hour's interval: only the last epoch"
    assert torch.load(config.paths.checkpoint, weights_only=True)["state"]["epoch"] == 3
    saved.clear()
    every = make_config(TINY | {"train.epochs": 3, "train.checkpoint_minutes": 0})
    train.run(every, resume="never")
    assert saved == [1, 2, 3], "0: after every epoch, each once"
