"""Both tasks end to end through the same stages: classification on the built-in digits, binary segmentation
with a threshold chosen on val, and segmentation scored at the original mask resolution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import REPO, TINY, folder_params, make_config, write_pair
from visionflow.config import BuiltinConfig
from visionflow.data import builtin
from visionflow.data.digits import CLASSES as DIGITS
from visionflow.handoffs import EvaluationMetrics, GateDecision, ModelMeta
from visionflow.models import load_model, update_meta
from visionflow.stages import balance, evaluate, plan, prepare, register, train, validate

DATA_STAGES = (prepare, validate, balance)


def digits_overrides() -> dict[str, object]:
    """The README's digits recipe, with the generator module addressed from the repository."""
    recipe = yaml.safe_load((REPO / "examples" / "digits.yaml").read_text())
    return recipe | {"data.root": str(REPO / recipe["data.root"])}


@pytest.mark.slow
def test_classification_on_builtin_digits_reaches_090_and_is_registered(workdir: Path) -> None:
    config = make_config(digits_overrides())
    for stage in DATA_STAGES:
        stage.run(config)
    trained = train.run(config)
    metrics = evaluate.run(config).val
    assert metrics["accuracy"] >= 0.9, metrics
    assert trained.score == pytest.approx(metrics["accuracy"], abs=1e-6), "the saved model is the best epoch"
    assert metrics["balanced_accuracy"] >= 0.85 and metrics["macro_f1"] >= 0.85
    assert {f"f1_{d}" for d in "0123456789"} <= set(metrics) and "precision_7" in metrics and "recall_3" in metrics
    files = config.paths.evaluated("val")
    per_class = pd.read_csv(files.per_class)
    assert per_class["support"].sum() == json.loads(config.paths.metrics.read_text())["images"]["val"]
    per_image = pd.read_csv(files.per_image, dtype={"actual": str, "predicted": str})
    assert per_image["correct"].mean() == pytest.approx(metrics["accuracy"])
    assert (per_image["actual"] == per_image["predicted"]).mean() == pytest.approx(metrics["accuracy"])
    assert set(per_image["actual"]) == set(DIGITS), "class names, not ids"
    for plot in (files.confusion_matrix, files.overlays_best, files.overlays_worst):
        assert plot.stat().st_size > 5000, plot
    registered = register.run(config)
    assert (registered.name, registered.alias, registered.metric) == ("digits-classifier", "champion", "val_accuracy")
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    version = client.get_model_version_by_alias("digits-classifier", "champion")
    run = client.get_run(version.run_id)
    assert run.data.tags["task"] == "classification"
    assert run.data.metrics["val/macro_f1"] == pytest.approx(metrics["macro_f1"], abs=1e-6)


def binary_dataset(root: Path, n_train: int = 16, n_val: int = 8, n_test: int = 0, test_seed: int = 5) -> Path:
    """The builtin shapes as one foreground class: 0 background, 1 any shape; a test split drawn with its own
    seed where ``n_test`` is set."""
    cfg = BuiltinConfig(image_size=64, seed=5)
    for index in range(n_train + n_val):
        image, mask = builtin.generate_sample(index, cfg, has_rare=False)
        dirs = ("train", "trainannot") if index < n_train else ("val", "valannot")
        write_pair(root, dirs, f"frame_{index:03d}.png", image, (mask > 0).astype(np.uint8))
    test_cfg = BuiltinConfig(image_size=64, seed=test_seed)
    for index in range(n_train + n_val, n_train + n_val + n_test):
        image, mask = builtin.generate_sample(index, test_cfg, has_rare=False)
        write_pair(root, ("test", "testannot"), f"frame_{index:03d}.png", image, (mask > 0).astype(np.uint8))
    return root


def test_binary_segmentation_chooses_stores_and_uses_its_threshold(workdir: Path) -> None:
    root = binary_dataset(workdir / "data")
    params = folder_params(root, **{"train.epochs": 3, "train.batch_size": 8, "model.encoder": "tu-resnet10t"})
    config = make_config(params | {"data.classes": ["background", "shape"], "data.ignore_index": 255})
    for stage in DATA_STAGES:
        stage.run(config)
    trained = train.run(config)
    _, meta = load_model(config.paths.weights)
    assert trained.threshold is not None and meta.threshold == trained.threshold
    assert 0.05 <= meta.threshold <= 0.95
    chosen = evaluate.run(config).val
    assert chosen["threshold"] == pytest.approx(meta.threshold, abs=1e-6)
    predicted = pd.read_csv(config.paths.evaluated("val").per_class).set_index("class")["predicted"]

    update_meta(config.paths.weights, threshold=0.999)  # evaluate must follow what the model file says
    strict = evaluate.run(config).val
    assert strict["threshold"] == 0.999
    strictly = pd.read_csv(config.paths.evaluated("val").per_class).set_index("class")["predicted"]
    assert strictly["shape"] < predicted["shape"]
    assert strict["dice_shape"] <= chosen["dice_shape"] + 1e-9, "tau was chosen to maximise val Dice"


def test_segmentation_is_scored_at_the_original_mask_resolution(workdir: Path) -> None:
    config = make_config(TINY | {"train.input.size": [32, 32], "train.augment.scale": [0.8, 1.2]})
    for stage in DATA_STAGES:
        stage.run(config)
    train.run(config)
    evaluate.run(config)
    per_class = pd.read_csv(config.paths.evaluated("val").per_class)
    val_images = json.loads(config.paths.metrics.read_text())["images"]["val"]
    assert per_class["support"].sum() == val_images * 64 * 64, "every original pixel is scored, none resized away"
    meta = ModelMeta.read(config.paths)
    assert meta.classes == builtin.CLASSES and (meta.input_size, meta.input_policy) == ((32, 32), "resize")


def test_a_test_split_is_scored_apart_and_steers_no_choice(workdir: Path) -> None:
    """Changing only the test images changes no training choice (the plan, best epoch, threshold) and no val
    figure, but the test figures; the gate scores on test, and says so."""
    root = binary_dataset(workdir / "data", n_test=6)
    params = folder_params(root, **{"train.epochs": "auto", "train.batch_size": 8, "model.encoder": "tu-resnet10t"})
    config = make_config(params | {"data.classes": ["background", "shape"], "data.ignore_index": 255,
                                   "plan.budget_minutes": 0.05, "plan.batches": [8]})  # fmt: skip
    plans = []

    def pipeline() -> tuple[ModelMeta, EvaluationMetrics]:
        for stage in DATA_STAGES:
            stage.run(config)
        plan.run(config)
        plans.append(config.paths.plan_file.read_bytes())
        trained = train.run(config, resume="never")
        return trained, evaluate.run(config)

    trained, scored = pipeline()
    assert scored.images == {"val": 8, "test": 6} and scored.test is not None
    shown = json.loads(config.paths.metrics.read_text())
    assert shown["test"]["miou"] == pytest.approx(scored.test["miou"]) and shown["val"]["miou"] is not None
    test_files = config.paths.evaluated("test")
    assert len(pd.read_csv(test_files.per_image)) == 6 and test_files.confusion_matrix.stat().st_size > 1000
    assert pd.read_csv(config.paths.evaluated("val").per_image)["id"].str.startswith("frame_0").all()
    first = register.run(config)
    assert first.alias == "champion"

    for image in (root / "test").glob("*.png"):  # other shapes under the same names: only test changes
        image.unlink()
    binary_dataset(workdir / "other", n_test=6, test_seed=11)
    for split in ("test", "testannot"):
        for path in (workdir / "other" / split).glob("*.png"):
            path.replace(root / split / path.name)
    retrained, rescored = pipeline()
    assert plans[0] == plans[1], "the plan reads the train split only"
    assert (retrained.epoch, retrained.threshold, retrained.score) == (trained.epoch, trained.threshold, trained.score)
    timing = {"images_per_second", "corruption_seconds"}
    assert {k: v for k, v in rescored.val.items() if k not in timing} == {
        k: v for k, v in scored.val.items() if k not in timing
    }, "no val figure moves"
    assert rescored.test["miou"] != scored.test["miou"], "the test figures are of the new test images"

    second = register.run(config)
    decision = GateDecision.read(config.paths)
    assert second.version == "2" and decision.split == "test" and decision.gate.images == 6, decision
    assert any("both scored on test" in line for line in decision.report())
