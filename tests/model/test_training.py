from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import folder_params, make_config
from visionflow.config import Config, ModelConfig
from visionflow.engine import Runtime, create_optimizer, evaluate, predict_logits, train_one_epoch
from visionflow.handoffs import TrainingRun
from visionflow.losses import create_loss
from visionflow.metrics import segmentation_metrics
from visionflow.models import create_segmenter
from visionflow.stages import balance, prepare, register, train, validate
from visionflow.stages import evaluate as evaluate_stage


def full_size(images: torch.Tensor) -> torch.Tensor:
    """The (input, original) sizes of images that are scored as they are."""
    n, height, width = images.shape[:3]
    return torch.tensor([[height, width, height, width]] * n)


def test_training_fits_a_small_batch() -> None:
    """A few steps on one batch lower the loss and raise its mIoU: the loop really learns."""
    torch.manual_seed(0)
    images = torch.randint(0, 255, (4, 64, 64, 3), dtype=torch.uint8)
    masks = (images[..., 0] > 127).long()  # a learnable rule
    loader = DataLoader(TensorDataset(images, masks, full_size(images)), batch_size=4)
    runtime = Runtime(torch.device("cpu"), channels_last=True)
    model = runtime.prepare(create_segmenter(ModelConfig(encoder="tu-resnet10t"), num_classes=2))
    loss_fn = create_loss({"ce": 1.0, "dice": 1.0}, None, ignore_index=255)
    optimizer = create_optimizer(model, lr=3e-3)
    before = evaluate(model, loader, loss_fn, 2, 255, runtime)
    for _ in range(40):
        train_one_epoch(model, loader, loss_fn, optimizer, runtime)
    after = evaluate(model, loader, loss_fn, 2, 255, runtime)
    assert after.loss < before.loss * 0.7
    assert segmentation_metrics(after.confusion, ["a", "b"])["miou"] > 0.7


def test_the_fused_optimizer_makes_the_same_updates_as_adamws_loop() -> None:
    torch.manual_seed(0)
    model = create_segmenter(ModelConfig(encoder="tu-resnet10t"), num_classes=3)
    loop, start = copy.deepcopy(model), copy.deepcopy(model)
    fused = create_optimizer(model, lr=1e-2, weight_decay=1e-4)
    plain = torch.optim.AdamW(loop.parameters(), lr=1e-2, weight_decay=1e-4)
    assert fused.param_groups[0]["fused"], "CPU has the fused kernel"
    for _ in range(3):
        for a, b in zip(model.parameters(), loop.parameters(), strict=True):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        fused.step()
        plain.step()
    for a, b, s in zip(model.parameters(), loop.parameters(), start.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert not torch.equal(a, s), "three steps moved every parameter"


def test_stages_in_process_are_deterministic(tiny_config: Config) -> None:
    """Same params, same seed: two trainings give the same weights and the same metrics."""
    for stage in (prepare, validate, balance):
        stage.run(tiny_config)
    first = train.run(tiny_config)
    first_run = TrainingRun.read(tiny_config.paths)
    state = torch.load(tiny_config.paths.weights, weights_only=True)["state_dict"]
    second = train.run(tiny_config)
    again = torch.load(tiny_config.paths.weights, weights_only=True)["state_dict"]
    assert first == second and first.score is not None
    assert all(torch.equal(state[k], again[k]) for k in state)
    assert first_run.run_id != TrainingRun.read(tiny_config.paths).run_id, "each training is its own MLflow run"

    result = evaluate_stage.run(tiny_config)
    report = json.loads(tiny_config.paths.metrics.read_text())
    assert abs(report["val"]["miou"] - result.val["miou"]) < 1e-6
    headline = json.loads(tiny_config.paths.headline.read_text())  # what `dvc metrics show` shows
    assert list(headline) == ["val"] and headline["val"]["miou"] == report["val"]["miou"]
    assert headline["val"]["images"] == report["images"]["val"] and "corruption_mean" in headline["val"]
    assert not any(k.startswith(("iou_", "dice_")) or k.endswith("seconds") for k in headline["val"])
    val = tiny_config.paths.evaluated("val")
    assert val.confusion_matrix.stat().st_size > 1000
    per_image = pd.read_csv(val.per_image)
    assert len(per_image) == report["images"]["val"] and per_image["miou"].between(0, 1).all()
    assert val.overlays_best.is_file() and val.overlays_worst.is_file()
    assert report["test"] is None and (tiny_config.paths.evaluated("test").root / "README.md").is_file()
    no_test = pd.read_csv(tiny_config.paths.evaluated("test").per_class)  # the test plot's file, with no rows
    assert no_test.empty and list(no_test.columns) == list(pd.read_csv(val.per_class).columns)
    test = tiny_config.paths.evaluated("test")  # its declared figures say why they are empty, for dvc plots
    for figure in (test.confusion_matrix, test.overlays_best, test.overlays_worst):
        assert Image.open(figure).size[0] > 100, figure
    registered = register.run(tiny_config)
    assert registered.alias == "champion" and registered.version == "1"


def test_bf16_inference_agrees_with_fp32() -> None:
    """Reduced precision is an option only where it predicts what fp32 predicts."""
    torch.manual_seed(0)
    images = torch.randint(0, 255, (4, 64, 64, 3), dtype=torch.uint8)
    masks = (images[..., 0] > 127).long()
    loader = DataLoader(TensorDataset(images, masks, full_size(images)), batch_size=4)
    fp32 = Runtime(torch.device("cpu"), channels_last=True)
    model = fp32.prepare(create_segmenter(ModelConfig(encoder="tu-resnet10t"), num_classes=2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(20):
        train_one_epoch(model, loader, create_loss({"ce": 1.0}, None, 255), optimizer, fp32)
    bf16 = Runtime(torch.device("cpu"), channels_last=True, precision="bf16")
    reference = predict_logits(model, images, fp32).argmax(1)
    reduced = predict_logits(model, images, bf16).argmax(1)
    assert (reference == reduced).float().mean() >= 0.99


def test_quarantined_files_never_reach_training(workdir: Path, camvid_like: Callable[..., Path]) -> None:
    """In quarantine mode the pipeline goes on, and only accepted images are trained and evaluated on."""
    root = camvid_like(workdir / "data", 8, 4)
    (root / "train" / "frame_003.png").write_bytes(b"")
    config = make_config(
        folder_params(root, **{"validate.on_error": "quarantine", "train.epochs": 1, "train.batch_size": 4})
    )
    for stage in (prepare, validate, balance):
        stage.run(config)
    weights = pd.read_csv(config.paths.sample_weights)
    assert len(weights) == 7 and "frame_003" not in weights["id"].tolist()
    train.run(config)
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    inputs = client.get_run(TrainingRun.read(config.paths).run_id).inputs.dataset_inputs
    rows = {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): json.loads(i.dataset.profile)["num_rows"]
        for i in inputs
    }
    assert rows == {"train": 7, "val": 4}, "the run's datasets are the accepted rows of each split"
    evaluated = evaluate_stage.run(config)
    per_image = pd.read_csv(config.paths.evaluated("val").per_image)
    assert evaluated.images == {"val": 4} and per_image["id"].tolist() == [f"frame_{i:03d}" for i in range(8, 12)]


def test_auto_precision_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    from visionflow import engine

    cpu = torch.device("cpu")
    assert engine.resolve_precision("fp32", cpu) == "fp32" and engine.resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(engine, "cpu_has_bf16", lambda: True)
    assert engine.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(engine, "cpu_has_bf16", lambda: False)
    assert engine.resolve_precision("auto", cpu) == "fp32"
