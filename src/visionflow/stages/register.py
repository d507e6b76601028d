"""register: log the self-contained pyfunc, register a version with its lineage, and run the promotion gate.

The new version and the current champion are both scored now on the gate's split (``register.gate_split``:
test where the data has one, else val); the candidate becomes
``champion`` (the old one ``previous``) only when the paired bootstrap says it is better beyond ``min_delta``
and no class regresses by more than ``max_class_drop``; otherwise it becomes ``challenger``. The first version
of a model is champion without a comparison.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import segmentation_models_pytorch as smp
import timm
import torch
import yaml
from PIL import Image

from visionflow import tracking
from visionflow.config import Config
from visionflow.errors import ConfigError
from visionflow.handoffs import EvaluationMetrics, ModelMeta, Registration, TrainingRun, ValidationSummary
from visionflow.registry import gate_and_alias, gate_split, load_split
from visionflow.serving import Predictor, VisionflowPyfunc, to_frame

__all__ = ["lineage_tags", "run"]


def _requirements() -> list[str]:
    import mlflow
    import numpy
    import PIL
    import pydantic
    import tqdm

    base = torch.__version__.split("+")[0]
    return [
        f"torch=={base}",
        f"segmentation-models-pytorch=={smp.__version__}",
        f"timm=={timm.__version__}",
        f"mlflow=={mlflow.__version__}",
        f"numpy=={numpy.__version__}",
        f"pandas=={pd.__version__}",
        f"pillow=={PIL.__version__}",
        f"pydantic=={pydantic.__version__}",
        f"pyyaml=={yaml.__version__}",
        f"tqdm=={tqdm.__version__}",
    ]


def _params_hash(lock: Path = Path("dvc.lock")) -> str:
    """sha256 over every stage's params as dvc.lock recorded them (what produced this model)."""
    if not lock.is_file():
        return "none"
    stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {})
    params = {name: stage.get("params", {}) for name, stage in sorted(stages.items())}
    return "sha256:" + hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def lineage_tags(config: Config, run_id: str, evaluation: EvaluationMetrics) -> dict[str, str]:
    """Where the model comes from: run, commit, data and params hashes, validation result, flow run, and the
    headline metrics of every split evaluate scored."""
    validation = ValidationSummary.read(config.paths).headline()
    headline = (
        ("miou", "pixel_accuracy", "mean_dice")
        if config.project.task == "segmentation"
        else ("accuracy", "balanced_accuracy", "macro_f1")
    )
    tags = {
        "run_id": run_id,
        "git_commit": tracking.git_commit(),
        "data_hash": tracking.data_hash(config),
        "params_hash": _params_hash(),
        "validation": validation,
        "prefect_flow_run_id": os.environ.get("VISIONFLOW_FLOW_RUN_ID", "none"),
        "task": config.project.task,
    }
    for split in evaluation.splits:
        scores = evaluation.scores(split)
        tags |= {f"{split}_{k}": f"{scores[k]:.6f}" for k in headline if scores.get(k) is not None}
    return tags


def _example(image: Any) -> pd.DataFrame:
    """One eval image as a client sends it: a base64 PNG in the ``image`` column."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return pd.DataFrame({"image": [base64.b64encode(buffer.getvalue()).decode("ascii")]})


def run(config: Config) -> Registration:
    tracking.ensure_reachable(config)
    paths = config.paths
    metric_name = config.register_.metric or f"val_{config.primary_metric}"
    name = config.model_name
    evaluation = EvaluationMetrics.read(paths)
    metrics = evaluation.val
    value = metrics.get(metric_name.removeprefix("val_"))
    if value is None:
        raise ConfigError(
            f"{paths.metrics}: no val metric '{metric_name}' (register.metric); available: {', '.join(metrics)}"
        )
    meta = ModelMeta.read(paths)
    training_run = TrainingRun.read(paths)
    data = load_split(config, gate_split(config))
    example = _example(data.images[0])
    output = to_frame(meta, Predictor.from_file(paths.weights).predict(data.images[:1]))  # what the pyfunc answers
    with tracking.open_run(config, training_run):
        version = tracking.log_pyfunc_version(
            VisionflowPyfunc(), {"weights": paths.weights}, example, output, name, _requirements(), meta.describe()
        )
        tracking.set_version_tags(config, name, version, lineage_tags(config, training_run.run_id, evaluation))
    decision = gate_and_alias(config, version, data=data)
    result = Registration(
        name, version, decision.alias, metric_name, float(value), decision.champion_before, decision.promoted,
        decision.reasons,
    )  # fmt: skip
    result.write(paths)
    print("register: " + "\n".join(decision.report()))
    return result
