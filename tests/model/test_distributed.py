"""DDP on the CPU: `torchrun --nproc_per_node 2 -m visionflow.cli train` trains one model in one MLflow run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import TINY, make_config, run_tool
from visionflow.data import builtin
from visionflow.models import load_model
from visionflow.stages import balance, evaluate, prepare, validate


@pytest.mark.slow
def test_two_process_ddp_run_makes_one_model_and_one_mlflow_run(workdir: Path) -> None:
    config = make_config(TINY | {"train.epochs": 2, "train.batch_size": 8, "model.encoder": "tu-resnet10t"})
    for stage in (prepare, validate, balance):
        stage.run(config)
    params = config.model_dump(mode="json", by_alias=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    result = run_tool("torchrun", "--standalone", "--nproc_per_node", "2", "-m", "visionflow.cli", "train", cwd=workdir)
    assert "2 process(es)" in result.stdout, result.stdout[-2000:]

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, "only rank 0 opens a run"
    run = runs[0]
    assert run.data.metrics["train/world_size"] == 2
    assert len(client.get_metric_history(run.info.run_id, "train/val_miou")) == 2, "one point per epoch, not per rank"
    _, meta = load_model(config.paths.weights)
    history = pd.read_csv(config.paths.history)
    assert history["epoch"].tolist() == [1, 2] and history["val_miou"].between(0, 1).all()
    best = history.loc[history["val_score"].idxmax()]
    assert (meta.epochs, meta.epoch) == (2, int(best["epoch"])), "model.pt holds the best of the two epochs"
    assert meta.score == pytest.approx(best["val_score"]) and meta.classes == tuple(builtin.CLASSES)
    assert not list(workdir.glob("data/model/*.partial")), "no half-written files from a second writer"
    # the val pass scored on each rank's share what rank 0 saved (weights or their average, BatchNorm statistics
    # included): evaluate, on one process, finds the same score
    assert evaluate.run(config).val["miou"] == pytest.approx(meta.score, abs=1e-6)
