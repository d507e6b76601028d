"""evaluate per group of images (data.groups: a sequence, a site, a camera): a table, a plot and MLflow metrics, so a
team sees which group fails."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import folder_params, make_config
from tests.data.test_groups import LEAKY, SEQUENCE, write_frames
from visionflow.handoffs import TrainingRun
from visionflow.stages import balance, evaluate, prepare, train, validate


def test_evaluate_scores_each_group_and_one_group_of_every_image_is_the_split(workdir: Path) -> None:
    root = write_frames(workdir / "cam", LEAKY)  # val: seqA_006, seqC_007, seqC_008
    params = folder_params(root, **{"train.epochs": 1, "train.batch_size": 4})
    config = make_config(params | {"data.groups.pattern": SEQUENCE})
    for stage in (prepare, validate, balance):
        stage.run(config)
    train.run(config)
    evaluate.run(config)
    files = config.paths.evaluated("val")
    groups = pd.read_csv(files.per_group).set_index("group")
    assert groups["images"].to_dict() == {"seqA": 1, "seqC": 2}
    per_image = pd.read_csv(files.per_image)
    assert per_image.groupby("group").size().to_dict() == {"seqA": 1, "seqC": 2}
    assert files.per_group_plot.stat().st_size > 5000
    run = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}").get_run(TrainingRun.read(config.paths).run_id)
    for group, score in groups["score"].items():
        assert run.data.metrics[f"val/group/{group}"] == pytest.approx(score, abs=1e-6)

    # one group holding every val image: its score, from the images' summed confusion matrices, is the split's
    every = make_config(params | {"data.groups.pattern": "^seq"})
    for stage in (prepare, validate):
        stage.run(every)
    split = evaluate.run(every).val
    whole = pd.read_csv(every.paths.evaluated("val").per_group)
    assert whole["group"].tolist() == ["seq"] and whole["images"].tolist() == [3]
    assert whole["score"].iloc[0] == pytest.approx(split["miou"], abs=1e-6)
    assert whole["miou"].iloc[0] == whole["score"].iloc[0]
