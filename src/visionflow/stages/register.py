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
from visionflow.handoffs import (
    EvaluationMetrics,
    GateDecision,
    ModelMeta,
    PlanFile,
    Registration,
    TrainingRun,
    ValidationSummary,
)
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
    tags = {
        "run_id": run_id,
        "git_commit": tracking.git_commit(),
        "data_hash": tracking.data_hash(config),
        "params_hash": _params_hash(),
        "validation": validation,
        "prefect_flow_run_id": os.environ.get("VISIONFLOW_FLOW_RUN_ID", "none"),
        "task": config.project.task,
    }
    for split, figures in evaluation.headline().items():
        tags |= {f"{split}_{k}": f"{v:.6f}" for k, v in figures.items() if v is not None and k != "images"}
    return tags


def descriptions(config: Config, meta: ModelMeta, evaluation: EvaluationMetrics, tags: dict[str, str],
                 decision: GateDecision) -> tuple[str, str]:  # fmt: skip
    """What the registry's pages say first: the registered model (what it predicts, how its aliases are used)
    and this version (its data, model, figures and the gate's decision)."""
    kind = "Segmentation" if meta.task == "segmentation" else "Classification"
    model = (f"{kind} model of the {config.dataset_name} data, classes: {', '.join(meta.classes)}. Versions are "
             "logged by `visionflow register`; aliases: champion (serve it), challenger (kept, not promoted), "
             "previous (`visionflow rollback`).")  # fmt: skip
    size = "each image's own size" if meta.input_size is None else "x".join(map(str, meta.input_size))
    figures = "; ".join(f"{split}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                 for k, v in shown.items() if v is not None)
                        for split, shown in evaluation.headline().items())  # fmt: skip
    verdict = "promoted to champion" if decision.promoted else f"kept as {decision.alias}"
    settings = config.planned(PlanFile.read(config.paths).overrides()).train if config.auto_keys else config.train
    fields = settings.augment.model_dump().items() if settings.augment != "auto" else ()
    augment = {k: v for k, v in fields if v and k not in ("affine", "colour")}  # what it does, not how often
    trained = f"batch {settings.batch_size}, lr {settings.lr:.3g}, {settings.epochs} epochs, augment {augment}"
    version = (f"Data: {config.dataset_name} ({tags['data_hash']}); validation {tags['validation']}. "
               f"Model: {meta.arch}{'-' + meta.encoder if meta.encoder else ''}, input {size} ({meta.input_policy}), "
               f"best epoch {meta.epoch} of {meta.epochs}; plan: {trained}. {figures}. Gate: {verdict} "
               f"({'; '.join(decision.reasons)}). Commit {tags['git_commit'][:12]}, run {tags['run_id']}.")  # fmt: skip
    return model, version


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
        tags = lineage_tags(config, training_run.run_id, evaluation)
        tracking.set_version_tags(config, name, version, tags)
    decision = gate_and_alias(config, version, data=data)
    tracking.describe_version(config, name, version, *descriptions(config, meta, evaluation, tags, decision))
    result = Registration(
        name, version, decision.alias, metric_name, float(value), decision.champion_before, decision.promoted,
        decision.reasons,
    )  # fmt: skip
    result.write(paths)
    print("register: " + "\n".join(decision.report()))
    return result
