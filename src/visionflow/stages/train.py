"""train: fit the model, keep the best epoch by the task's val metric, and open the MLflow run for this model.

The session and the epoch are :mod:`visionflow.training`'s (the plan stage times the same epochs); this stage
adds the plan's values, resuming, MLflow (rank 0 alone logs), the binary threshold chosen on val and the report.
Single process by default; under ``torchrun`` it trains with DDP (see :mod:`visionflow.training`).
"""

from __future__ import annotations

import os
import time
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from visionflow import tracking, training
from visionflow.checkpoint import TrainingState, fingerprint, load_checkpoint, restore_rng
from visionflow.config import Config
from visionflow.data.loading import make_loader
from visionflow.distributed import Dist, from_env
from visionflow.engine import resolve_device, resolve_precision
from visionflow.errors import ConfigError, MissingInput
from visionflow.handoffs import DatasetInfo, ModelMeta, PlanFile, TrainingRun, ValidationSummary
from visionflow.metrics import best_threshold, threshold_counts
from visionflow.models import is_binary, load_model, update_meta

__all__ = ["planned", "run"]


def _lineage_tags(config: Config, info: DatasetInfo) -> dict[str, str]:
    tags = {
        "git_commit": tracking.git_commit(),
        "data_hash": tracking.data_hash(config),
        "data_source": info.source,
        "task": info.task,
        "visionflow.stage": "train",
        "precision": resolve_precision(config.train.precision, resolve_device(config.train.device)),
    }
    if os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run`: the run and `dvc exp show` name one experiment
        tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("VISIONFLOW_SWEEP"):
        tags["sweep"] = os.environ["VISIONFLOW_SWEEP"]
    return tags


def _log_data_stages(config: Config, info: DatasetInfo, splits: dict[str, pd.DataFrame]) -> None:
    """What the data stages produced, so the run holds the whole story of its model: the accepted manifest as the
    run's dataset (one input per split), and the validation and balance reports as artifacts."""
    paths = config.paths
    tracking.log_datasets(splits, name=config.dataset_name, source=info.root, digest=tracking.data_hash(config))
    for path, where in (
        (paths.validation_summary, "validation"),
        (paths.validation_report, "validation"),
        (paths.validation_page, "validation"),
        (paths.quarantine, "validation"),
        (paths.data_docs, "validation/data_docs"),
        (paths.class_weights, "balance"),
        (paths.class_distribution, "balance"),
        (paths.class_distribution_plot, "balance"),
        (paths.sample_weights, "balance"),
        (paths.plan_file, "plan"),
        (paths.plan_report, "plan"),
        (paths.dataset_info, "data"),
    ):
        if path.exists():
            tracking.log_artifact(path, where)
    plan = PlanFile.load_or_none(paths.plan_file)
    if plan is not None:  # the plan's estimate, to hold against the measured train_seconds and val_seconds
        tracking.log_metrics(
            {"plan/budget_minutes": plan.budget_minutes, "plan/estimated_minutes": plan.estimated_minutes}
        )
    summary = ValidationSummary.read(paths)
    tracking.log_metrics({"data/inputs": summary.inputs, "data/accepted": summary.accepted,
                          "data/quarantined": summary.quarantined})  # fmt: skip


def _fingerprint(config: Config) -> str:
    parts = {
        "project": config.project.model_dump(),
        "model": config.model.model_dump(),
        "train": config.train.model_dump(exclude={"num_threads", "checkpoint_minutes"}),
        "evaluate.input": config.eval_input.model_dump(),  # val scores pick the best epoch
        "evaluate.windows": [config.evaluate.overlap, config.evaluate.flip],
        "world_size": from_env().world,  # the epoch samples and the schedule's length depend on it
    }
    return fingerprint(parts, [config.paths.accepted, config.paths.class_weights, config.paths.sample_weights])


def _resume_point(config: Config, session: training.Session, mode: str) -> TrainingState:
    """Load the checkpoint when it belongs to these params and data and is unfinished; else a fresh state."""
    current = _fingerprint(config)
    saved = None if mode == "never" else load_checkpoint(config.paths.checkpoint)
    state: TrainingState | None = saved["state"] if saved else None
    usable = state is not None and state.fingerprint == current and state.epoch < config.train.epochs
    if not usable:
        if mode == "require":
            why = (
                "no checkpoint"
                if state is None
                else (
                    "it belongs to other params or data" if state.fingerprint != current else "it is already complete"
                )
            )
            raise ConfigError(f"cannot resume from {config.paths.checkpoint}: {why}; run without --resume")
        return TrainingState(fingerprint=current)
    session.model.load_state_dict(saved["model"])
    session.optimizer.load_state_dict(saved["optimizer"])
    session.scheduler.load_state_dict(saved["scheduler"])
    if session.average is not None:  # the fingerprint holds train.ema_decay: a checkpoint of these params has it
        session.average.load_state_dict(saved["average"])
    restore_rng(saved["rng"])  # the sampler and augmentation reseed from the epoch number
    if session.dist.is_main:
        print(f"train: resuming after epoch {state.epoch}/{config.train.epochs} from {config.paths.checkpoint}")
    return state


def run(config: Config, resume: str = "auto") -> ModelMeta:
    """Train, resuming from an unfinished checkpoint of the same params and data.

    ``resume``: ``auto`` (continue when possible, as after a killed ``dvc repro``), ``require`` (``--resume``:
    fail when there is nothing to continue) or ``never`` (``--fresh``). Returns the metadata of the model it kept
    (every rank; rank 0 wrote it).
    """
    config = planned(config)
    tracking.ensure_reachable(config)  # a tracking server that is down fails here, before any training
    dist = from_env()
    dist.start(resolve_device(config.train.device))
    try:
        return _run(config, resume, dist)
    finally:
        dist.stop()


def planned(config: Config) -> Config:
    """The config with plan.json's values where params say ``auto`` (the plan stage wrote them for these params)."""
    if not config.auto_keys:
        return config
    plan = PlanFile.read(config.paths)
    missing = [key for key in config.auto_keys if key not in plan.overrides()]
    if missing:
        raise MissingInput(f"{config.paths.plan_file} plans no {', '.join(missing)}; run `dvc repro plan`")
    return config.planned(plan.overrides())


def _open_run(
    config: Config, state: TrainingState, dist: Dist, info: DatasetInfo
) -> AbstractContextManager[TrainingRun | None]:
    """The MLflow run on rank 0 (a new one, or the checkpoint's); nothing on the other ranks."""
    if not dist.is_main:
        return nullcontext(None)
    if state.run_id:
        return tracking.continue_run(config, state.run_id)
    return tracking.start_run(config, run_name=run_name(config), tags=_lineage_tags(config, info))


def run_name(config: Config) -> str:
    """The run's name from the dataset, the model and the planned input: ``camvid unet-resnet18 384x480``."""
    model = config.model
    name = f"{model.arch}-{model.encoder}" if config.project.task == "segmentation" else model.arch
    spec = config.train.input
    size = "own size" if spec == "auto" or spec.size is None else f"{spec.size[0]}x{spec.size[1]}"
    crops = f" crops at {spec.scale:g}" if spec != "auto" and spec.policy == "crop" and spec.scale != 1 else ""
    return f"{config.dataset_name} {name.lower()} {size}{crops}"


def _run(config: Config, resume: str, dist: Dist) -> ModelMeta:
    paths, train_cfg = config.paths, config.train
    session = training.build_session(config, dist)
    state = _resume_point(config, session, resume)
    resumed = state.epoch
    start = time.perf_counter()
    kept: ModelMeta | None = None  # what rank 0 wrote, read once
    with _open_run(config, state, dist, session.info) as run_info:
        if run_info is not None and not state.run_id:
            _log_data_stages(config, session.info, session.splits)
            tracking.log_metrics({"train/world_size": dist.world})
            state.run_id = run_info.run_id
        epochs = tqdm(
            range(state.epoch + 1, train_cfg.epochs + 1),
            desc="epochs",
            unit="epoch",
            initial=state.epoch,
            total=train_cfg.epochs,
            disable=not dist.is_main,
        )
        looped = time.perf_counter()
        for epoch in epochs:
            row = training.fit_epoch(config, session, state, epoch, log=_log_epoch)
            epochs.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{row['val_score']:.3f}")
            if train_cfg.early_stopping and state.epochs_without_improvement >= train_cfg.early_stopping:
                if dist.is_main:
                    tqdm.write(f"train: stopping early, no better val score for {train_cfg.early_stopping} epochs")
                break
        training.save_state(config, session, state)  # the last epoch's, whatever the interval
        if dist.is_main:
            _log_budget(config, time.perf_counter() - looped, state.epoch - resumed)
            update_meta(paths.weights, epochs=state.epoch)
            if is_binary(session.info.task, len(session.info.classes)):
                _choose_threshold(config, session)
            pd.DataFrame(state.history).to_csv(paths.history, index=False)
            tracking.log_artifact(paths.history, "training")
            kept = ModelMeta.read(paths)
            tracking.log_metrics({"train/best_epoch": state.best_epoch, "train/best_val_score": state.best_score,
                                  "train/kept_average": float(kept.averaged)})  # fmt: skip
            run_info.write(paths)
    seconds = time.perf_counter() - start
    dist.barrier()  # rank 0 has written the model
    if kept is None:  # the other ranks read what rank 0 wrote
        kept = ModelMeta.read(paths)
    if dist.is_main:
        which = "the weights' moving average" if kept.averaged else "the weights"
        print(
            f"train: best val {config.primary_metric} {state.best_score:.4f} at epoch {state.best_epoch}/"
            f"{train_cfg.epochs}, {which} ({seconds:.0f}s this session, {dist.world} process(es)) -> {paths.weights}"
        )
    return kept


def _choose_threshold(config: Config, session: training.Session) -> float:
    """Binary segmentation: the tau that maximises foreground Dice of the best model on val, stored with it."""
    model, _ = load_model(config.paths.weights)
    model = session.runtime.prepare(model)
    counts: list[np.ndarray] = []

    def collect(preds: list[torch.Tensor], targets: list[torch.Tensor], logits: list[torch.Tensor]) -> None:
        counts.extend(threshold_counts(x, y, ignore) for x, y in zip(logits, targets, strict=True))

    ignore = session.info.ignore_index
    loader = make_loader(session.val_loader.dataset, config.evaluate.batch_size)  # the whole val split
    session.inference.evaluate(model, loader, session.runtime, 2, ignore, on_batch=collect)
    tau, dice = best_threshold(np.sum(counts, axis=0))
    update_meta(config.paths.weights, threshold=tau)
    tracking.log_metrics({"train/threshold": tau, "train/threshold_val_dice": dice})
    tqdm.write(f"train: binary threshold {tau:.3f} (val foreground Dice {dice:.4f}) stored in {config.paths.weights}")
    return tau


def _log_budget(config: Config, seconds: float, epochs: int) -> None:
    """The epochs' wall time against the plan's budget and estimate (where a plan set the epochs)."""
    tracking.log_metrics({"train/seconds": seconds})
    plan = PlanFile.load_or_none(config.paths.plan_file)
    planned_epochs = None if plan is None else next((d for d in plan.decisions if d.key == "train.epochs"), None)
    if planned_epochs is None or planned_epochs.pinned or epochs != config.train.epochs:
        return  # the epochs were pinned, or this session resumed or stopped early: nothing to hold it against
    budget = plan.budget_minutes * 60
    tqdm.write(
        f"train: {epochs} epochs in {seconds:.0f} s against the plan's budget of {budget:.0f} s "
        f"({seconds / budget - 1:+.0%}; estimated {plan.estimated_minutes * 60:.0f} s)"
    )


def _log_epoch(row: dict[str, float], epoch: int) -> None:
    """An epoch's figures in the MLflow run: ``train/...`` keeps the curves apart from evaluate's final ``val_*``
    metrics of the chosen model."""
    tracking.log_metrics({f"train/{k}": v for k, v in row.items() if k != "epoch"}, step=epoch)
