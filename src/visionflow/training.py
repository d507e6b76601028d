"""The training library: the runtime set-up, one training session built from the config and the data stages'
outputs, and the epoch as training runs it (the training pass, the val pass, the saves).

``stages/train`` drives it (MLflow, resume, the threshold, the report) and ``stages/plan`` times two of its epochs
at the settings it plans (:func:`time_epochs`), so both run the same code and neither imports the other. Nothing
here talks to MLflow: the stage passes a callback that logs each epoch.

Single process by default; under ``torchrun`` each rank draws its share of the same weighted epoch sample, val is
split across ranks and its confusion matrices summed, and rank 0 alone saves.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from visionflow.checkpoint import TrainingState, save_checkpoint
from visionflow.config import Config, TrainConfig
from visionflow.data.dataset import EpochSampler, ImageDataset
from visionflow.data.loading import ShardSampler, make_dataset, make_loader
from visionflow.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from visionflow.distributed import Dist
from visionflow.engine import (
    Runtime,
    WeightAverage,
    create_optimizer,
    resolve_device,
    resolve_precision,
    train_one_epoch,
)
from visionflow.handoffs import AcceptedManifest, ClassWeights, DatasetInfo, ModelMeta, SampleWeights
from visionflow.inference import Inference
from visionflow.losses import create_loss
from visionflow.metrics import task_metrics
from visionflow.models import create_model, save_model

__all__ = [
    "EpochLog",
    "Session",
    "build_session",
    "fit_epoch",
    "model_meta",
    "save_state",
    "seed_everything",
    "setup_runtime",
    "time_epochs",
]

EpochLog = Callable[[dict[str, float], int], None]  # an epoch's row and number, for the tracking the stage does


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_runtime(
    train: TrainConfig,
    local_rank: int | None = None,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> Runtime:
    """Where and how training runs on this machine: torch's CPU threads (``train.num_threads``), the device (under
    DDP, the rank's own GPU), the memory layout and the precision; the model's normalisation."""
    if train.num_threads:
        torch.set_num_threads(train.num_threads)
    device = resolve_device(train.device)
    if device.type == "cuda" and local_rank is not None:
        device = torch.device("cuda", local_rank)
    return Runtime(device, train.channels_last, resolve_precision(train.precision, device), mean, std)


def model_meta(config: Config, info: DatasetInfo) -> ModelMeta:
    """What travels with the weights: how to rebuild the model, its classes, and the preprocessing it expects (the
    size, policy, scale and windows validation scores it with, which evaluation, registration and serving then
    use through :meth:`Inference.of`). Epoch and score are filled in as epochs improve on it."""
    model, spec = config.model, config.eval_input
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
        metric=f"val_{config.primary_metric}",
    )


@dataclass
class Session:
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
    meta: ModelMeta  # what is saved with the best weights (epoch and score filled in then)
    average: WeightAverage | None  # the weights' moving average (train.ema_decay), scored beside them
    saved_at: float = field(default_factory=time.perf_counter)  # when the checkpoint was last written (or the start)
    saved_epoch: int = -1  # the epoch it holds (-1: none written by this session)

    @property
    def inference(self) -> Inference:
        """How the val pass scores the model: as evaluate, predict and serving will."""
        return Inference.of(self.meta)


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


def build_session(config: Config, dist: Dist) -> Session:
    """The model, optimiser, schedule, loss and loaders of one training (a planned config: no ``auto`` left)."""
    paths, train_cfg = config.paths, config.train
    seed_everything(config.project.seed)
    info = DatasetInfo.read(paths)
    meta = model_meta(config, info)
    runtime = setup_runtime(train_cfg, dist.local_rank if dist.enabled else None, meta.mean, meta.std)
    manifest = AcceptedManifest.read(paths)
    balance = ClassWeights.read(paths)
    train_rows, val_rows = manifest.split("train"), manifest.split("val")

    def datasets() -> tuple[ImageDataset, ImageDataset]:
        return (
            make_dataset(config, info, train_rows, train_cfg.input, train=True, rare=balance.rare_ids()),
            make_dataset(config, info, val_rows, Inference.of(meta).input, train=False),
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
    device = runtime.device
    model = runtime.prepare(create_model(config.model, info.task, len(info.classes)))
    trained = (
        DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if dist.enabled
        else model
    )
    average = None if train_cfg.ema_decay is None else WeightAverage(model, train_cfg.ema_decay)
    loss_fn = create_loss(train_cfg.loss, list(balance.weights), info.ignore_index, train_cfg.focal_gamma)
    optimizer = create_optimizer(model, train_cfg.lr, train_cfg.weight_decay)
    return Session(
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
        meta,
        average,
    )


def fit_epoch(config: Config, session: Session, state: TrainingState, epoch: int,
              log: EpochLog | None = None) -> dict[str, float]:  # fmt: skip
    """One epoch as training runs it: the training pass, the val pass (of the weights and of their average), the
    best model's save and, when ``train.checkpoint_minutes`` have passed since the last, the checkpoint's (rank 0);
    ``log`` sees the epoch's row (rank 0). The epoch's ``val_score`` is the better of the two; ``averaged`` says
    which it was (1: the average). The caller checkpoints the last epoch (:func:`save_state`)."""
    row = _train_epoch(session, epoch, config.train.grad_clip)
    if _record_epoch(config, session, state, row, log) and session.dist.is_main:
        averaged = bool(row.get("averaged"))
        kept = session.average.module if averaged and session.average is not None else session.model
        best = replace(session.meta, epoch=epoch, epochs=epoch, score=row["val_score"], averaged=averaged)
        save_model(kept, config.paths.weights, best)
    if time.perf_counter() - session.saved_at >= 60 * config.train.checkpoint_minutes:
        save_state(config, session, state)
    return row


def save_state(config: Config, session: Session, state: TrainingState) -> None:
    """Write the checkpoint of the epoch ``state`` has completed (rank 0; once per epoch)."""
    if session.dist.is_main and session.saved_epoch != state.epoch:
        save_checkpoint(
            config.paths.checkpoint,
            model=session.model,
            optimizer=session.optimizer,
            scheduler=session.scheduler,
            state=state,
            average=session.average,
        )
    session.saved_at, session.saved_epoch = time.perf_counter(), state.epoch


def time_epochs(config: Config, epochs: int = 2) -> list[float]:
    """The wall seconds of the first ``epochs`` epochs exactly as training runs them (:func:`fit_epoch`, saving
    into ``config.paths.model``), logged nowhere: the plan stage's measure of what an epoch costs at the settings
    it plans, data loading and augmentation included (the schedule is made at least ``epochs`` long: its length
    changes no epoch's time)."""
    if config.train.epochs < epochs:
        config = config.model_copy(update={"train": config.train.model_copy(update={"epochs": epochs})})
    session = build_session(config, Dist(0, 1, 0))
    state = TrainingState(fingerprint="timing")
    seconds = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        fit_epoch(config, session, state, epoch)
        seconds.append(time.perf_counter() - start)
    return seconds


def _train_epoch(session: Session, epoch: int, grad_clip: float | None) -> dict[str, float]:
    session.sampler.set_epoch(epoch)
    session.train_set.set_epoch(epoch, session.dist.rank)
    start = time.perf_counter()
    average = session.average
    fit = train_one_epoch(
        session.trained,
        session.train_loader,
        session.loss_fn,
        session.optimizer,
        session.runtime,
        session.scheduler,
        desc=f"epoch {epoch}",
        grad_clip=grad_clip,
        after_step=None if average is None else lambda: average.update(session.model),
    )
    session.dist.share_buffers(session.model)
    if average is not None:  # averaged from each rank's own BatchNorm statistics: rank 0's on every rank
        session.dist.share_buffers(average.module)
    fitted = time.perf_counter()
    primary = session.primary
    loss, score = _validate(session, session.model)
    ips = session.dist.sum(torch.tensor([fit["images_per_second"]], dtype=torch.float64)).item()  # all ranks
    row = {
        "epoch": epoch,
        "train_loss": fit["loss"],
        "val_loss": loss,
        "val_score": score,
        f"val_{primary}": score,
        "lr": session.optimizer.param_groups[0]["lr"],
        "train_images_per_second": ips,
        "train_seconds": fitted - start,  # the epoch's wall time: the training pass, then the val pass
    }
    if average is not None:
        ema_loss, ema_score = _validate(session, average.module)
        row |= {"ema_val_loss": ema_loss, f"ema_val_{primary}": ema_score, "averaged": float(ema_score > score)}
        row["val_score"] = max(score, ema_score)
    return row | {"val_seconds": time.perf_counter() - fitted}


def _validate(session: Session, model: torch.nn.Module) -> tuple[float, float]:
    """The val loss and primary score of ``model`` (every rank scores its share; the counts are summed)."""
    classes, dist = session.info.classes, session.dist
    val = session.inference.evaluate(
        model, session.val_loader, session.runtime, len(classes), session.info.ignore_index, session.loss_fn
    )
    confusion = dist.sum(val.confusion)
    loss_sum, images = dist.sum(torch.tensor([val.loss * val.images, float(val.images)], dtype=torch.float64))
    metrics = task_metrics(session.info.task, confusion, classes)
    return float(loss_sum / images.clamp_min(1)), metrics[session.primary]


def _record_epoch(config: Config, session: Session, state: TrainingState, row: dict[str, float],
                  log: EpochLog | None) -> bool:  # fmt: skip
    """Record the epoch (rank 0: ``log``, the console), update the state; True when it is the best so far."""
    state.epoch = int(row["epoch"])
    state.history.append(row)
    if session.dist.is_main:
        if log is not None:
            log(row, state.epoch)
        tqdm.write(
            f"epoch {state.epoch:3d}  train_loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
            f"val_{config.primary_metric} {row['val_score']:.4f}  {row['train_images_per_second']:.1f} img/s"
        )
    if row["val_score"] > state.best_score:
        state.best_score, state.best_epoch, state.epochs_without_improvement = row["val_score"], state.epoch, 0
        return True
    state.epochs_without_improvement += 1
    return False
