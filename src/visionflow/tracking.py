"""The only module that talks to MLflow.

One MLflow run per trained model: the train stage opens it (logging params, lineage tags and what the data
stages produced), writes its id next to the model, and evaluate and register reopen that same run. Stages that
DVC skips keep their earlier results in the run, so the run always describes the model that is on disk.

Where runs go: ``MLFLOW_TRACKING_URI`` if set, else ``tracking.uri`` in params, else a SQLite file in the
working tree with a local artifact folder (no server needed).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from visionflow.config import Config
from visionflow.errors import RegistryError, TrackingUnavailable
from visionflow.handoffs import TrainingRun

__all__ = [
    "SYSTEM_METRICS_INTERVAL",
    "TrackingUnavailable",
    "client",
    "continue_run",
    "data_hash",
    "delete_alias",
    "describe_version",
    "ensure_reachable",
    "git_commit",
    "list_versions",
    "load_predictor",
    "log_artifact",
    "log_datasets",
    "log_metrics",
    "log_pyfunc_version",
    "model_version",
    "open_run",
    "set_alias",
    "set_version_tags",
    "start_run",
    "tracking_uri",
    "version_by_alias",
]

SYSTEM_METRICS_INTERVAL = 2.0  # seconds between CPU / memory / GPU samples of a training run (MLflow's default: 10)


def workspace_root(cwd: Path | None = None) -> Path:
    """The folder relative tracking paths hang from: the current one, or, for a DVC experiment running in a
    temporary copy (``dvc exp run --queue`` / ``--temp`` work in ``<workspace>/.dvc/tmp/exps/<tmp>/``), the
    workspace itself, so queued experiments log to the same embedded store as every other run."""
    parts = (cwd or Path.cwd()).resolve().parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return Path(*parts)


def _embedded_uri(config: Config) -> str:
    return f"sqlite:///{(workspace_root() / config.tracking.local_db).resolve().as_posix()}"


def tracking_uri(config: Config) -> str:
    """The store in use: environment first, then params, then the embedded SQLite default."""
    return os.environ.get("MLFLOW_TRACKING_URI") or config.tracking.uri or _embedded_uri(config)


def _mlflow(config: Config) -> Any:
    import mlflow  # imported here: it costs a second, and only tracking stages need it

    mlflow.set_tracking_uri(tracking_uri(config))
    return mlflow


EXPERIMENT_NOTE = (
    "visionflow: one run per trained model, named from the dataset, the model and its input size. Each holds its "
    "params (those that apply), the validated data (Datasets), the plan, the training curves (train/), the "
    "evaluation (val/, test/: per class, per group, under corruptions) and the logged model. "
    "Registered models are named <dataset>-segmenter or <dataset>-classifier."
)


def _experiment_id(mlflow: Any, config: Config) -> str:
    experiment = mlflow.get_experiment_by_name(config.tracking.experiment)
    if experiment is None:
        made = mlflow.create_experiment(config.tracking.experiment, artifact_location=_artifact_root(config),
                                        tags={"mlflow.note.content": EXPERIMENT_NOTE})  # fmt: skip
        return str(made)
    return str(experiment.experiment_id)


def describe_version(config: Config, name: str, version: str, model: str, this_version: str) -> None:
    """The registered model's description (what it is) and the version's (its data, plan, figures, decision):
    what the registry's pages show first."""
    mlflow_client = client(config)
    mlflow_client.update_registered_model(name, description=model)
    mlflow_client.update_model_version(name, str(version), description=this_version)


def _artifact_root(config: Config) -> str | None:
    """A new experiment's artifact root in a SQLite store: ``tracking.local_artifacts`` beside the database file,
    not ./mlruns of whatever folder the stage runs in (a DVC experiment runs in a temporary copy of the
    workspace). None for a tracking server, whose own artifact root applies."""
    uri = tracking_uri(config)
    if not uri.startswith("sqlite:///"):
        return None
    root = config.tracking.local_artifacts
    return (root if root.is_absolute() else Path(uri.removeprefix("sqlite:///")).parent / root).resolve().as_uri()


def git_commit(cwd: Path | None = None) -> str:
    """HEAD's commit, with ``-dirty`` when tracked files differ from it; ``unknown`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def data_hash(config: Config, lock: Path = Path("dvc.lock")) -> str:
    """The md5 DVC recorded for prepare's output in dvc.lock (the data every later stage used).

    Falls back to the accepted manifest's own sha256 (every image and mask hash) outside ``dvc repro``.
    """
    if lock.is_file():
        stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {})
        for out in stages.get("prepare", {}).get("outs", []):
            if Path(out.get("path", "")) == config.paths.prepared and out.get("md5"):
                return f"md5:{out['md5']}"
    accepted = config.paths.accepted
    return f"accepted-sha256:{hashlib.sha256(accepted.read_bytes()).hexdigest()}" if accepted.is_file() else "none"


def _system_metrics(mlflow: Any) -> None:
    """Sample CPU, memory (and GPU, where pynvml finds one) every few seconds, so a two-minute training has a
    curve; each sample is logged at once."""
    mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL)
    mlflow.set_system_metrics_samples_before_logging(1)


@contextmanager
def start_run(config: Config, run_name: str, tags: Mapping[str, str]) -> Iterator[TrainingRun]:
    """A new training run with every param logged and system metrics sampled; its id is what later stages
    reopen."""
    mlflow = _mlflow(config)
    experiment_id = _experiment_id(mlflow, config)
    _system_metrics(mlflow)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags),
                          log_system_metrics=True) as run:  # fmt: skip
        mlflow.log_params({k: "" if v is None else v for k, v in config.applicable().items()})
        yield TrainingRun(run.info.run_id, experiment_id, tracking_uri(config))


@contextmanager
def continue_run(config: Config, run_id: str) -> Iterator[TrainingRun]:
    """Reopen a training run by id (a resumed training keeps logging into the run it started)."""
    mlflow = _mlflow(config)
    _system_metrics(mlflow)
    with mlflow.start_run(run_id=run_id, log_system_metrics=True) as run:
        yield TrainingRun(run.info.run_id, str(run.info.experiment_id), tracking_uri(config))


@contextmanager
def open_run(config: Config, run: TrainingRun) -> Iterator[TrainingRun]:
    """Reopen the run that train started, to log what a later stage found about its model."""
    mlflow = _mlflow(config)
    with mlflow.start_run(run_id=run.run_id):
        yield run


def log_datasets(splits: Mapping[str, Any], name: str, source: str, digest: str) -> None:
    """The accepted manifest as the run's dataset inputs: one per split (named ``<name>/<split>``, the split as its
    context), all with the data hash DVC recorded as digest, so the run page lists what the model was trained and
    scored on and a search by dataset finds every run of the same data."""
    import warnings

    import mlflow

    short = digest.split(":", 1)[-1].removesuffix(".dir")[:36]  # MLflow keeps at most 36 characters: the md5
    for split, rows in splits.items():
        with warnings.catch_warnings():  # a local path "can be interpreted in multiple ways", all of them local
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(rows, source=source, name=f"{name}/{split}", digest=short)
        mlflow.log_input(dataset, context=split, tags={"data_hash": digest})


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if not math.isnan(float(v))}, step=step)


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    """Log a file or a whole folder (Data Docs, say) under ``artifact_path``."""
    import mlflow

    if path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path=artifact_path)
    else:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_pyfunc_version(
    python_model: Any,
    artifacts: Mapping[str, Path],
    example: Any,
    output: Any,
    name: str,
    pip_requirements: list[str],
    metadata: Mapping[str, Any],
) -> str:
    """Log a self-contained pyfunc (``python_model`` with its ``artifacts`` and the visionflow package as code) into
    the active run, with ``example`` (an input frame) and ``output`` (the model's answer to it) giving its signature;
    register it; return the version."""
    import mlflow
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    import visionflow

    signature = ModelSignature(  # an image cell is a base64 string or a uint8 array
        inputs=Schema([ColSpec(AnyType(), "image")]), outputs=infer_signature(example, output).outputs
    )
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=python_model,
        artifacts={key: str(path) for key, path in artifacts.items()},
        code_paths=[str(Path(visionflow.__file__).parent)],
        signature=signature,
        input_example=example,
        registered_model_name=name,
        pip_requirements=pip_requirements,
        metadata=dict(metadata),
    )
    return str(info.registered_model_version)


def ensure_reachable(config: Config, timeout: float = 3.0) -> None:
    """Fail in seconds, naming the URI, when a tracking server is configured but down (MLflow's own client would
    retry for minutes, possibly after a run was half-logged). Local stores need no check."""
    import urllib.error
    import urllib.request

    uri = tracking_uri(config)
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            if response.status == 200:
                return
            reason = f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise TrackingUnavailable(
        f"MLflow tracking server {uri} is not reachable ({reason}); start it, or unset MLFLOW_TRACKING_URI "
        "(and tracking.uri) to use the embedded SQLite store"
    )


def client(config: Config) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri(config))


def version_by_alias(config: Config, name: str, alias: str) -> Any | None:
    """The model version holding ``alias``, or None (also when the model is not registered yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return client(config).get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def set_alias(config: Config, name: str, alias: str, version: str, tags: Mapping[str, str] | None = None) -> None:
    mlflow_client = client(config)
    mlflow_client.set_registered_model_alias(name, alias, str(version))
    set_version_tags(config, name, version, tags or {})


def delete_alias(config: Config, name: str, alias: str) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # nobody held it
        client(config).delete_registered_model_alias(name, alias)


def set_version_tags(config: Config, name: str, version: str, tags: Mapping[str, Any]) -> None:
    mlflow_client = client(config)
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, str(version), key, str(value))


def list_versions(config: Config, name: str) -> tuple[list[Any], dict[str, list[str]]]:
    """Every version of a registered model, newest first, and the aliases each version holds."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(config)
    try:
        aliases = mlflow_client.get_registered_model(name).aliases or {}
    except MlflowException:
        return [], {}
    held: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        held.setdefault(str(version), []).append(alias)
    versions = mlflow_client.search_model_versions(f"name = '{name}'")
    return sorted(versions, key=lambda v: int(v.version), reverse=True), held


_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def load_predictor(config: Config, uri: str) -> Any:
    """The :class:`visionflow.serving.Predictor` inside a logged pyfunc (``models:/name@alias``, a path, ...); a
    model, version, alias or path that does not exist is a :class:`RegistryError` naming it."""
    from mlflow.exceptions import MlflowException

    mlflow = _mlflow(config)
    try:
        model = mlflow.pyfunc.load_model(uri)
    except MlflowException as exc:
        if exc.error_code not in _NOT_FOUND:
            raise
        raise RegistryError(f"{uri}: {exc.message} (`visionflow models` lists the versions)") from None
    except OSError as exc:
        raise RegistryError(f"{uri}: no logged model there ({exc})") from None
    return model.unwrap_python_model().predictor


def model_version(config: Config, name: str, version: str) -> Any:
    """The registered version, or a :class:`RegistryError` that says which versions exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client(config).get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code not in _NOT_FOUND:
            raise
        raise RegistryError(f"{name} has no version {version} (`visionflow models` lists the versions)") from None
