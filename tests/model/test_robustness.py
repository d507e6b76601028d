"""evaluate under corruptions: the split scored again per corruption and severity through the one inference path,
a table, a plot, the means in metrics.json (``dvc metrics show``) and every score in MLflow; a switch turns it off."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import TINY, make_config
from visionflow.corruptions import CORRUPTIONS, SEVERITIES
from visionflow.handoffs import EvaluationMetrics, TrainingRun
from visionflow.stages import balance, evaluate, prepare, train, validate


def test_evaluate_scores_each_corruption_and_severity(workdir: Path) -> None:
    config = make_config(TINY | {"train.epochs": 2})
    for stage in (prepare, validate, balance, train):
        stage.run(config)
    val = evaluate.run(config).val
    files = config.paths.evaluated("val")
    table = pd.read_csv(files.corruptions)
    assert table["severity"].tolist() == [0, *SEVERITIES]
    assert list(table.columns[1:]) == list(CORRUPTIONS)
    assert table.iloc[0, 1:].tolist() == pytest.approx([val["miou"]] * len(CORRUPTIONS), abs=1e-6), "row 0: clean"
    scores = table.iloc[1:, 1:]
    assert ((scores >= 0) & (scores <= 1)).all().all()
    assert val["corruption_mean"] == pytest.approx(scores.to_numpy().mean(), abs=1e-5)
    # all three are rounded to 6 decimals: the quotient of two rounded figures is off by up to 5e-7 (1 + ratio) / clean,
    # the ratio's own rounding by 5e-7 more; the tolerance is twice that
    ratio, clean = val["corruption_ratio"], val["miou"]
    assert ratio == pytest.approx(val["corruption_mean"] / clean, abs=1e-6 * (1 + ratio) / clean + 1e-6)
    for name in CORRUPTIONS:
        assert val[f"corruption_{name}"] == pytest.approx(scores[name].mean(), abs=1e-5)
    assert val["corruption_seconds"] > 0
    assert EvaluationMetrics.read(config.paths).val["corruption_mean"] == val["corruption_mean"]
    assert files.corruptions_plot.stat().st_size > 5000
    run = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}").get_run(TrainingRun.read(config.paths).run_id)
    assert run.data.metrics["val/corruption_mean"] == pytest.approx(val["corruption_mean"], abs=1e-6)
    assert run.data.metrics["val/corruption/fog/5"] == pytest.approx(table.iloc[-1]["fog"], abs=1e-6)

    again = evaluate.run(config).val  # seeded: the same scores on a rerun
    assert again["corruption_mean"] == val["corruption_mean"]

    off = make_config(TINY | {"train.epochs": 2, "evaluate.corruptions": False})
    scored = evaluate.run(off).val
    assert not any(key.startswith("corruption_") for key in scored)
    assert not off.paths.evaluated("val").corruptions.exists()
    assert scored["miou"] == pytest.approx(val["miou"]), "the clean scores do not depend on the switch"
