"""The typed hand-offs between stages: each file reads back as it was written, and a missing file or one of another
schema is an error that names the stage to run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_config, make_meta
from visionflow import handoffs
from visionflow.errors import DataError, MissingInput
from visionflow.handoffs import (
    AcceptedManifest,
    CheckOutcome,
    ClassWeights,
    DatasetInfo,
    Decision,
    DriftRow,
    EvaluationMetrics,
    Failure,
    GateDecision,
    GateResult,
    Manifest,
    ModelMeta,
    PlanFile,
    Registration,
    SampleWeights,
    TrainingRun,
    ValidationSummary,
)

JSON_FILES = [
    DatasetInfo("folder", "/data/roads", ("background", "road"), 255),
    ValidationSummary(
        False,
        "quarantine",
        5,
        4,
        1,
        (CheckOutcome("image_decodes", "error", False, 1), CheckOutcome("drift", "warning", None, 0, "nothing")),
        (Failure("a.png", "image_decodes", "error", "truncated", "decodes"),),
        (DriftRow("brightness_mean", 1.5, 1.0, 0.5, 0.2, True),),
        "12 images",
        "data/validation/docs/index.html",
    ),
    ClassWeights("median_frequency", "repeat_factor", ("a", "b"), (90, 10), (0.9, 0.1), (0.2, 1.8), 1.25),
    TrainingRun("abc123", "1", "sqlite:///mlflow.db"),
    PlanFile(
        "cpu: test",
        2.0,
        1.9,
        (
            Decision("train.input", {"size": [64, 64], "policy": "resize"}, "fits"),
            Decision("train.epochs", 3, "", True),
        ),
        ("scale floor 0.50",),
        {"images": 4},
    ),
    EvaluationMetrics({"miou": 0.5, "iou_b": None}, {"miou": 0.4}, {"val": 12, "test": 9}, {"val": ["c"], "test": []}),
    Registration("m", "3", "challenger", "val_miou", 0.5, "2", False, ("lower bound not above 0",)),
    GateDecision(
        "m",
        "3",
        "challenger",
        False,
        False,
        "2",
        ("lower bound not above 0",),
        GateResult(False, ("lower bound",), "per-image IoU", 12, 0.5, 0.49, 0.01, -0.02, 0.04, 0.95, {"b": -0.01}),
        "test",
    ),
]


@pytest.mark.parametrize("written", JSON_FILES, ids=lambda h: type(h).__name__)
def test_json_hand_offs_read_back_as_written(written: handoffs._JsonFile, workdir: Path) -> None:
    paths = make_config().paths
    path = written.write(paths)
    assert path == type(written).path(paths) and json.loads(path.read_text())["schema"] == written.schema
    assert type(written).read(paths) == written


@pytest.mark.parametrize("cls", [type(h) for h in JSON_FILES], ids=lambda c: c.__name__)
def test_a_missing_or_older_file_names_the_stage_that_writes_it(cls: type, workdir: Path) -> None:
    paths = make_config().paths
    path = cls.path(paths)
    with pytest.raises(MissingInput, match=rf"{path}: {cls.what} not found; run `dvc repro {cls.made_by}`"):
        cls.read(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"val": {}}')  # what an earlier version wrote: no schema
    with pytest.raises(MissingInput, match=rf"schema None, this visionflow reads schema {cls.schema}.*{cls.made_by}"):
        cls.read(paths)
    assert cls.load_or_none(path) is None, "summaries of a run that stopped early skip what they cannot read"


def test_nan_scores_are_written_as_null(workdir: Path) -> None:
    paths = make_config().paths
    EvaluationMetrics({"miou": float("nan"), "iou_a": np.float32(0.25)}).write(paths)
    assert json.loads(paths.metrics.read_text())["val"] == {"miou": None, "iou_a": 0.25}


def test_manifests_keep_text_columns_and_check_their_schema(workdir: Path) -> None:
    paths = make_config().paths
    rows = pd.DataFrame(
        {c: [None, None] for c in handoffs.manifest_columns(2)}
        | {"id": ["007", "008"], "split": ["train", "val"], "image_path": ["a.png", "b.png"], "sha256": ["1e5", "2"]}
    )
    Manifest(rows).write(paths)
    back = Manifest.read(paths)
    assert back.rows["id"].tolist() == ["007", "008"] and back.rows["sha256"].tolist() == ["1e5", "2"]
    assert back.per_split == {"train": 1, "val": 1} and back.unreadable == 0
    assert back.split("val")["image_path"].tolist() == ["b.png"]
    with pytest.raises(DataError, match="split 'test' has no readable images"):
        back.split("test")
    AcceptedManifest(rows.drop(columns=["mask_sha256"])).write(paths)
    with pytest.raises(MissingInput, match=r"accepted\.csv: accepted manifest of schema without mask_sha256.*validate"):
        AcceptedManifest.read(paths)


def test_sample_weights_align_with_the_rows_training_uses(workdir: Path) -> None:
    paths = make_config().paths
    SampleWeights(
        pd.DataFrame({"id": ["a", "b"], "image_path": ["x/a.png", "x/b.png"], "repeat_factor": [1, 2.5]})
    ).write(paths)
    weights = SampleWeights.read(paths)
    rows = pd.DataFrame({"image_path": ["x/b.png", "x/a.png"]})
    assert weights.for_rows(rows).tolist() == [2.5, 1.0]
    with pytest.raises(MissingInput, match=r"no repeat factor for 1 train image.*x/c\.png.*dvc repro balance"):
        weights.for_rows(pd.DataFrame({"image_path": ["x/c.png"]}))


def test_model_meta_travels_inside_model_pt(tmp_path: Path) -> None:
    import torch

    meta = make_meta("segmentation", ["bg", "fg"], size=(64, 96), policy="pad")
    meta = ModelMeta(
        **{**meta.__dict__, "threshold": 0.35, "epoch": 3, "epochs": 5, "metric": "val_miou", "score": 0.7}
    )
    path = meta.save(tmp_path / "model.pt", {"w": torch.ones(2)})
    assert not path.with_name("model.pt.partial").exists()
    state, back = handoffs.load_weights_and_meta(path)
    assert back == meta and back.input_size == (64, 96) and torch.equal(state["w"], torch.ones(2))
    assert ModelMeta.load(path).describe()["threshold"] == 0.35


def test_class_weights_name_the_rarest_classes() -> None:
    weights = ClassWeights("none", "none", ("a", "b", "c", "d"), (50, 5, 40, 1), (0.5, 0.05, 0.4, 0.01), (1,) * 4, 1.0)
    assert weights.rarest(2) == ["d", "b"]
