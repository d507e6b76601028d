"""register: log the self-contained pyfunc, register a version with its lineage, and run the promotion gate.

The new version and the current champion are both scored on the current val split; the candidate becomes
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
from dataclasses import asdict, dataclass
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
from visionflow.engine import resolve_precision
from visionflow.models import read_meta
from visionflow.registry import Decision, gate_and_alias, load_val
from visionflow.serving import Preprocessing

__all__ = ["RegisterResult", "lineage_tags", "preprocessing_for", "run"]


@dataclass(frozen=True)
class RegisterResult:
    name: str
    version: str
    alias: str
    metric: str
    value: float
    champion_before: str | None
    promoted: bool
    reasons: list[str]


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


def preprocessing_for(config: Config, meta: dict[str, Any]) -> Preprocessing:
    """What the served model does to an image: the eval input policy, and the trained model's classes/threshold."""
    spec = config.eval_input
    return Preprocessing(
        task=str(meta.get("task", "segmentation")),
        classes=list(meta["classes"]),
        ignore_index=int(meta["ignore_index"]),
        policy=spec.policy,
        size=None if spec.size is None else list(spec.size),
        threshold=float(meta["threshold"]) if "threshold" in meta else None,
        precision=resolve_precision(config.train.precision, torch.device("cpu")),  # the Predictor runs on the CPU
        channels_last=config.train.channels_last,
    )


def _params_hash(lock: Path = Path("dvc.lock")) -> str:
    """sha256 over every stage's params as dvc.lock recorded them (what produced this model)."""
    if not lock.is_file():
        return "none"
    stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {})
    params = {name: stage.get("params", {}) for name, stage in sorted(stages.items())}
    return "sha256:" + hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def lineage_tags(config: Config, run_id: str, metrics: dict[str, Any]) -> dict[str, str]:
    """Where the model comes from: run, commit, data and params hashes, validation result, flow run, metrics."""
    summary_path = config.paths.validation_summary
    validation = "unknown"
    if summary_path.is_file():
        s = json.loads(summary_path.read_text(encoding="utf-8"))
        status = "passed" if s.get("success") else "failed"
        validation = f"{status}: {s['inputs']} inputs = {s['accepted']} accepted + {s['quarantined']} set aside"
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
    tags |= {f"val_{k}": f"{metrics[k]:.6f}" for k in headline if metrics.get(k) is not None}
    return tags


def _example(image: Any) -> pd.DataFrame:
    """One val image as a client sends it: a base64 PNG in the ``image`` column."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return pd.DataFrame({"image": [base64.b64encode(buffer.getvalue()).decode("ascii")]})


def run(config: Config) -> RegisterResult:
    tracking.ensure_reachable(config)
    paths = config.paths
    metric_name = config.register_.metric or f"val_{config.primary_metric}"
    name = config.model_name
    metrics = json.loads(paths.metrics.read_text(encoding="utf-8"))["val"]
    value = metrics.get(metric_name.removeprefix("val_"))
    if value is None:
        raise KeyError(
            f"{paths.metrics}: no val metric '{metric_name}' (register.metric); available: {', '.join(metrics)}"
        )
    meta = read_meta(paths.weights)
    val = load_val(config)
    with tracking.open_run(config, paths.run_info) as run_info:
        version = tracking.log_pyfunc_version(
            paths.weights,
            preprocessing_for(config, meta),
            _example(val.images[0]),
            name,
            _requirements(),
            metadata={k: meta[k] for k in ("task", "classes", "ignore_index", "threshold") if k in meta},
        )
        tracking.set_version_tags(config, name, version, lineage_tags(config, run_info.run_id, metrics))
    decision = gate_and_alias(config, version, val=val)
    result = RegisterResult(
        name, version, decision.alias, metric_name, float(value), decision.champion_before, decision.promoted,
        decision.reasons,
    )  # fmt: skip
    paths.registration.write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    report(decision)
    return result


def report(decision: Decision) -> None:
    against = f"champion was v{decision.champion_before}" if decision.champion_before else "no champion before"
    print(f"register: {decision.model_name} version {decision.version} -> @{decision.alias} ({against})")
    for reason in decision.reasons:
        print(f"  - {reason}")
