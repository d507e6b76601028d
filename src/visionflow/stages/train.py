"""train: fit the model, keep the best epoch by the task's val metric, and open the MLflow run for this model.

Single process by default; under ``torchrun`` it trains with DDP: each rank draws its share of the same
weighted epoch sample, val is split across ranks and its confusion matrices summed, and rank 0 alone logs,
saves checkpoints and writes the model. Binary segmentation models get their threshold chosen on val.
"""

from __future__ import annotations

import math
import os
import random
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from visionflow import tracking
from visionflow.checkpoint import TrainingState, fingerprint, load_checkpoint, restore_rng, save_checkpoint
from visionflow.config import Config
from visionflow.data.dataset import EpochSampler, ImageDataset
from visionflow.data.loading import ShardSampler, make_dataset, make_loader
from visionflow.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from visionflow.distributed import Dist, from_env
from visionflow.engine import Runtime, evaluate, resolve_device, resolve_precision, train_one_epoch
from visionflow.errors import ConfigError, MissingInput
from visionflow.handoffs import (
    AcceptedManifest,
    ClassWeights,
    DatasetInfo,
    ModelMeta,
    PlanFile,
    SampleWeights,
    TrainingRun,
    ValidationSummary,
)
from visionflow.losses import create_loss
from visionflow.metrics import best_threshold, task_metrics, threshold_counts
from visionflow.models import create_model, is_binary, load_model, save_model, update_meta
from visionflow.windows import Windows

__all__ = ["planned", "run", "seed_everything", "time_epochs"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
    source = info.source if info.source in ("builtin", "digits") else Path(info.root).name
    tracking.log_datasets(splits, name=source, source=info.root, digest=tracking.data_hash(config))
    for path, where in (
        (paths.validation_summary, "validation"),
        (paths.validation_report, "validation"),
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


@dataclass
class _Session:
    """Everything one training needs, built once from the config and the data stages' outputs."""

    model: torch.nn.Module  # the plain module: what is saved, loaded and evaluated
    trained: torch.nn.Module  # what the training step calls: the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: torch.nn.Module
    train_loader: DataLoader
    val_loader: DataLoader
    sampler: EpochSampler
    train_set: ImageDataset
    runtime: Runtime
    dist: Dist
    info: DatasetInfo
    splits: dict[str, pd.DataFrame]  # the accepted train and val rows
    primary: str  # the val metric that picks the best epoch (Config.primary_metric)
    policy: str  # how val logits map back to the original masks
    windows: Windows | None  # the window policy's windows (a model trained on crops)


def _schedule(
    config: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    train_cfg = config.train
    total = train_cfg.epochs * steps_per_epoch
    if train_cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=train_cfg.lr, total_steps=total, pct_start=0.15)
    warmup = max(1, round(train_cfg.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _build(config: Config, dist: Dist) -> _Session:
    paths, train_cfg = config.paths, config.train
    seed_everything(config.project.seed)
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    info = DatasetInfo.read(paths)
    manifest = AcceptedManifest.read(paths)
    balance = ClassWeights.read(paths)
    train_rows, val_rows = manifest.split("train"), manifest.split("val")

    def datasets() -> tuple[ImageDataset, ImageDataset]:
        return (
            make_dataset(config, info, train_rows, train_cfg.input, train=True, rare=balance.rare_ids()),
            make_dataset(config, info, val_rows, config.eval_input, train=False),
        )

    if dist.local_rank == 0:  # one process per machine decodes; the others then map the same cache files
        train_set, val_set = datasets()
    dist.barrier()
    if dist.local_rank != 0:
        train_set, val_set = datasets()
    weights = None if balance.sampler == "none" else SampleWeights.read(paths).for_rows(train_rows)
    per_image = train_cfg.input.crops_per_image  # train runs planned configs: the input is never auto here
    sampler = EpochSampler(len(train_set), config.project.seed, weights, dist.rank, dist.world, per_image)
    per_rank = max(1, train_cfg.batch_size // dist.world)  # train.batch_size is the global batch
    train_loader = make_loader(train_set, per_rank, sampler, drop_last=len(sampler) > per_rank)
    val_loader = make_loader(val_set, config.evaluate.batch_size, ShardSampler(len(val_set), dist.rank, dist.world))
    device = resolve_device(train_cfg.device)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    runtime = Runtime(device, train_cfg.channels_last, resolve_precision(train_cfg.precision, device))
    model = runtime.prepare(create_model(config.model, info.task, len(info.classes)))
    trained = (
        DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if dist.enabled
        else model
    )
    loss_fn = create_loss(train_cfg.loss, list(balance.weights), info.ignore_index, train_cfg.focal_gamma)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    return _Session(
        model,
        trained,
        optimizer,
        _schedule(config, optimizer, len(train_loader)),
        loss_fn.to(runtime.device),
        train_loader,
        val_loader,
        sampler,
        train_set,
        runtime,
        dist,
        info,
        {"train": train_rows, "val": val_rows},
        config.primary_metric,
        config.eval_input.policy,
        Windows.of(
            config.eval_input.policy,
            config.eval_input.size,
            config.evaluate.overlap,
            config.evaluate.flip,
            config.eval_input.scale,
        ),
    )


def _fingerprint(config: Config) -> str:
    parts = {
        "project": config.project.model_dump(),
        "model": config.model.model_dump(),
        "train": config.train.model_dump(exclude={"num_threads"}),
        "evaluate.input": config.eval_input.model_dump(),  # val scores pick the best epoch
        "evaluate.windows": [config.evaluate.overlap, config.evaluate.flip],
        "world_size": from_env().world,  # the epoch samples and the schedule's length depend on it
    }
    return fingerprint(parts, [config.paths.accepted, config.paths.class_weights, config.paths.sample_weights])


def _resume_point(config: Config, session: _Session, mode: str) -> TrainingState:
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
    model = config.model
    run_name = f"{model.arch}-{model.encoder}" if config.project.task == "segmentation" else model.arch
    return tracking.start_run(config, run_name=run_name, tags=_lineage_tags(config, info))


def _run(config: Config, resume: str, dist: Dist) -> ModelMeta:
    paths, train_cfg = config.paths, config.train
    session = _build(config, dist)
    state = _resume_point(config, session, resume)
    resumed = state.epoch
    start = time.perf_counter()
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
            row = _fit_epoch(config, session, state, epoch, log=True)
            epochs.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{row['val_score']:.3f}")
            if train_cfg.early_stopping and state.epochs_without_improvement >= train_cfg.early_stopping:
                if dist.is_main:
                    tqdm.write(f"train: stopping early, no better val score for {train_cfg.early_stopping} epochs")
                break
        if dist.is_main:
            _log_budget(config, time.perf_counter() - looped, state.epoch - resumed)
            update_meta(paths.weights, epochs=state.epoch)
            if is_binary(session.info.task, len(session.info.classes)):
                _choose_threshold(config, session)
            pd.DataFrame(state.history).to_csv(paths.history, index=False)
            tracking.log_artifact(paths.history, "training")
            tracking.log_metrics({"train/best_epoch": state.best_epoch, "train/best_val_score": state.best_score})
            run_info.write(paths)
    seconds = time.perf_counter() - start
    dist.barrier()  # rank 0 has written the model
    if dist.is_main:
        print(
            f"train: best val {config.primary_metric} {state.best_score:.4f} at epoch {state.best_epoch}/"
            f"{train_cfg.epochs} ({seconds:.0f}s this session, {dist.world} process(es)) -> {paths.weights}"
        )
    return ModelMeta.read(paths)


def _model_meta(config: Config, session: _Session, epoch: int, score: float) -> ModelMeta:
    """What travels with the weights: how to rebuild the model, its classes, and the preprocessing it expects (the
    size and policy validation scored it with, which evaluation, registration and serving then use)."""
    model, info, spec = config.model, session.info, config.eval_input
    return ModelMeta(
        task=info.task,
        arch=model.arch,
        encoder=model.encoder,
        classes=info.classes,
        ignore_index=info.ignore_index,
        input_size=spec.size,
        input_policy=spec.policy,
        overlap=config.evaluate.overlap,
        flip=config.evaluate.flip,
        scale=spec.scale,
        mean=IMAGENET_MEAN,  # the statistics smp and timm encoders expect
        std=IMAGENET_STD,
        epoch=epoch,
        epochs=epoch,
        metric=f"val_{config.primary_metric}",
        score=score,
    )


def _save_best(config: Config, session: _Session, epoch: int, row: dict[str, float]) -> None:
    save_model(session.model, config.paths.weights, _model_meta(config, session, epoch, row["val_score"]))


def _choose_threshold(config: Config, session: _Session) -> float:
    """Binary segmentation: the tau that maximises foreground Dice of the best model on val, stored with it."""
    model, _ = load_model(config.paths.weights)
    model = session.runtime.prepare(model)
    counts: list[np.ndarray] = []

    def collect(preds: list[torch.Tensor], targets: list[torch.Tensor], logits: list[torch.Tensor]) -> None:
        counts.extend(threshold_counts(x, y, ignore) for x, y in zip(logits, targets, strict=True))

    ignore = session.info.ignore_index
    loader = make_loader(session.val_loader.dataset, config.evaluate.batch_size)  # the whole val split
    evaluate(model, loader, None, 2, ignore, session.runtime, session.policy, on_batch=collect, windows=session.windows)
    tau, dice = best_threshold(np.sum(counts, axis=0))
    update_meta(config.paths.weights, threshold=tau)
    tracking.log_metrics({"train/threshold": tau, "train/threshold_val_dice": dice})
    tqdm.write(f"train: binary threshold {tau:.3f} (val foreground Dice {dice:.4f}) stored in {config.paths.weights}")
    return tau


def _fit_epoch(config: Config, session: _Session, state: TrainingState, epoch: int, log: bool) -> dict[str, float]:
    """One epoch as training runs it: the training pass, the val pass, the best model's and the checkpoint's saves
    (rank 0), logged to MLflow where ``log``."""
    row = _train_epoch(session, epoch, config.train.grad_clip)
    if _record_epoch(config, session, state, row, log) and session.dist.is_main:
        _save_best(config, session, epoch, row)
    if session.dist.is_main:
        save_checkpoint(
            config.paths.checkpoint,
            model=session.model,
            optimizer=session.optimizer,
            scheduler=session.scheduler,
            state=state,
        )
    return row


def time_epochs(config: Config, epochs: int = 2) -> list[float]:
    """The wall seconds of the first ``epochs`` epochs exactly as training runs them (:func:`_fit_epoch`, saving
    into ``config.paths.model``), logged nowhere: the plan stage's measure of what an epoch costs at the settings
    it plans, data loading and augmentation included (the schedule is made at least ``epochs`` long: its length
    changes no epoch's time)."""
    if config.train.epochs < epochs:
        config = config.model_copy(update={"train": config.train.model_copy(update={"epochs": epochs})})
    session = _build(config, Dist(0, 1, 0))
    state = TrainingState(fingerprint="timing")
    seconds = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        _fit_epoch(config, session, state, epoch, log=False)
        seconds.append(time.perf_counter() - start)
    return seconds


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


def _train_epoch(session: _Session, epoch: int, grad_clip: float | None) -> dict[str, float]:
    session.sampler.set_epoch(epoch)
    session.train_set.set_epoch(epoch, session.dist.rank)
    start = time.perf_counter()
    fit = train_one_epoch(
        session.trained,
        session.train_loader,
        session.loss_fn,
        session.optimizer,
        session.runtime,
        session.scheduler,
        desc=f"epoch {epoch}",
        grad_clip=grad_clip,
    )
    session.dist.share_buffers(session.model)
    fitted = time.perf_counter()
    classes = session.info.classes
    val = evaluate(
        session.model,
        session.val_loader,
        session.loss_fn,
        len(classes),
        session.info.ignore_index,
        session.runtime,
        session.policy,
        windows=session.windows,
    )
    dist = session.dist
    confusion = dist.sum(val.confusion)
    loss_sum, images = dist.sum(torch.tensor([val.loss * val.images, float(val.images)], dtype=torch.float64))
    metrics = task_metrics(session.info.task, confusion, classes)
    primary = session.primary
    ips = dist.sum(torch.tensor([fit["images_per_second"]], dtype=torch.float64)).item()  # all ranks together
    return {
        "epoch": epoch,
        "train_loss": fit["loss"],
        "val_loss": float(loss_sum / images.clamp_min(1)),
        "val_score": metrics[primary],
        f"val_{primary}": metrics[primary],
        "lr": session.optimizer.param_groups[0]["lr"],
        "train_images_per_second": ips,
        "train_seconds": fitted - start,  # the epoch's wall time: the training pass, then the val pass
        "val_seconds": time.perf_counter() - fitted,
    }


def _record_epoch(config: Config, session: _Session, state: TrainingState, row: dict[str, float], log: bool) -> bool:
    """Log the epoch (rank 0; to MLflow where ``log``), update the state; True when this epoch is the best so far."""
    state.epoch = int(row["epoch"])
    state.history.append(row)
    if session.dist.is_main:
        # "train/..." keeps the curves apart from evaluate's final val_* metrics of the chosen model
        if log:
            tracking.log_metrics({f"train/{k}": v for k, v in row.items() if k != "epoch"}, step=state.epoch)
        tqdm.write(
            f"epoch {state.epoch:3d}  train_loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
            f"val_{config.primary_metric} {row['val_score']:.4f}  {row['train_images_per_second']:.1f} img/s"
        )
    if row["val_score"] > state.best_score:
        state.best_score, state.best_epoch, state.epochs_without_improvement = row["val_score"], state.epoch, 0
        return True
    state.epochs_without_improvement += 1
    return False
