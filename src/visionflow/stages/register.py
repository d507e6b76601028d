"""register: log the model to MLflow with a signature, register a version, and give it an alias.

The alias is ``champion`` when no version holds it yet or when this model's val metric beats the champion's,
otherwise ``challenger``. (A paired, statistical promotion gate replaces this comparison in a later issue.)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import segmentation_models_pytorch as smp
import timm
import torch

from visionflow import tracking
from visionflow.config import Config
from visionflow.data.dataset import normalise
from visionflow.data.loading import make_dataset
from visionflow.data.manifest import read_dataset_info, read_manifest, split_rows
from visionflow.data.transforms import pad_collate
from visionflow.models import load_model

__all__ = ["RegisterResult", "choose_alias", "run"]


@dataclass(frozen=True)
class RegisterResult:
    name: str
    version: str
    alias: str
    metric: str
    value: float
    champion_before: str | None
    champion_value: float | None


def choose_alias(value: float, champion_value: float | None) -> str:
    """``champion`` when there is none or the new value is strictly higher (a NaN champion is beaten)."""
    if champion_value is None or math.isnan(champion_value) or value > champion_value:
        return "champion"
    return "challenger"


def _requirements() -> list[str]:
    base = torch.__version__.split("+")[0]
    return [f"torch=={base}", f"segmentation-models-pytorch=={smp.__version__}", f"timm=={timm.__version__}"]


def run(config: Config) -> RegisterResult:
    paths, reg = config.paths, config.register_
    metric_name = reg.metric or f"val_{config.primary_metric}"
    model_name = config.model_name
    metrics = json.loads(paths.metrics.read_text(encoding="utf-8"))
    metric_key = metric_name.removeprefix("val_")
    value = metrics["val"].get(metric_key)
    if value is None:
        raise KeyError(
            f"{paths.metrics}: no val metric '{metric_key}' (register.metric); available: {', '.join(metrics['val'])}"
        )
    model, meta = load_model(paths.weights)
    rows = split_rows(read_manifest(paths.accepted, made_by="validate"), "val", paths.accepted)
    dataset = make_dataset(config, read_dataset_info(paths.dataset_info), rows.iloc[:1], train=False)
    images, _, _ = pad_collate([dataset[0]], dataset.ignore_index)  # one val image as the model receives it
    example = normalise(images).numpy().astype(np.float32)

    before = tracking.registry_metric(config, model_name, "champion", metric_name)
    with tracking.open_run(config, paths.run_info) as run_info:
        version = tracking.log_model_version(
            model,
            example,
            model_name,
            _requirements(),
            metadata={k: meta[k] for k in ("task", "classes", "ignore_index", "threshold") if k in meta},
        )
        alias = choose_alias(float(value), before[1] if before else None)
        tags = {
            metric_name: f"{value:.6f}",
            "git_commit": tracking.git_commit(),
            "data_hash": tracking.data_hash(config),
            "run_id": run_info.run_id,
        }
        tracking.set_alias(config, model_name, alias, version, tags)
    result = RegisterResult(
        model_name,
        version,
        alias,
        metric_name,
        float(value),
        before[0] if before else None,
        before[1] if before else None,
    )
    paths.registry.mkdir(parents=True, exist_ok=True)
    paths.registration.write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    against = f" (champion v{before[0]} had {before[1]:.4f})" if before else " (no champion before)"
    print(f"register: {model_name} version {version} -> @{alias}, {metric_name} {value:.4f}{against}")
    return result
