"""train: fit the segmentation model, keep the best epoch by val mIoU, and open the MLflow run for this model."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm import tqdm

from visionflow import tracking
from visionflow.checkpoint import TrainingState, fingerprint, load_checkpoint, restore_rng, save_checkpoint
from visionflow.config import Config
from visionflow.data.dataset import SegmentationDataset
from visionflow.data.manifest import read_dataset_info, read_manifest, split_rows
from visionflow.engine import Runtime, evaluate, resolve_device, resolve_precision, train_one_epoch
from visionflow.losses import create_loss
from visionflow.metrics import segmentation_metrics
from visionflow.models import create_segmenter, save_model
from visionflow.stages.balance import read_balance, read_sample_weights

__all__ = ["TrainResult", "run", "seed_everything"]


@dataclass(frozen=True)
class TrainResult:
    best_epoch: int
    best_val_miou: float
    epochs: int
    seconds: float
    run_id: str


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _lineage_tags(config: Config) -> dict[str, str]:
    return {
        "git_commit": tracking.git_commit(),
        "data_hash": tracking.data_hash(config),
        "data_source": config.data.source,
        "visionflow.stage": "train",
        "precision": resolve_precision(config.train.precision, resolve_device(config.train.device)),
    }


def _log_data_stages(config: Config) -> None:
    """What the data stages produced, so the run holds the whole story of its model."""
    paths = config.paths
    for path, where in (
        (paths.validation_summary, "validation"),
        (paths.validation_report, "validation"),
        (paths.quarantine, "validation"),
        (paths.data_docs, "validation/data_docs"),
        (paths.class_weights, "balance"),
        (paths.class_distribution, "balance"),
        (paths.class_distribution_plot, "balance"),
        (paths.sample_weights, "balance"),
        (paths.dataset_info, "data"),
    ):
        if path.exists():
            tracking.log_artifact(path, where)
    if paths.validation_summary.is_file():
        summary = json.loads(paths.validation_summary.read_text(encoding="utf-8"))
        tracking.log_metrics({f"data/{k}": summary[k] for k in ("inputs", "accepted", "quarantined")})


@dataclass
class _Session:
    """Everything one training needs, built once from the config and the data stages' outputs."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: torch.nn.Module
    train_loader: DataLoader
    val_loader: DataLoader
    runtime: Runtime
    generators: dict[str, torch.Generator]
    classes: tuple[str, ...]
    ignore_index: int


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


def _build(config: Config) -> _Session:
    paths, train_cfg = config.paths, config.train
    seed_everything(config.project.seed)
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    info = read_dataset_info(paths.dataset_info)
    manifest = read_manifest(paths.accepted, made_by="validate")
    balance = read_balance(config)
    train_rows = split_rows(manifest, "train", paths.accepted)
    train_set = SegmentationDataset(train_rows, augment=True, seed=config.project.seed, size=train_cfg.input_size)
    val_set = SegmentationDataset(split_rows(manifest, "val", paths.accepted), size=train_cfg.input_size)
    sampling = _sampling(config, balance["sampler"], train_rows)
    train_loader = DataLoader(
        train_set, batch_size=train_cfg.batch_size, drop_last=len(train_set) > train_cfg.batch_size, **sampling
    )
    device = resolve_device(train_cfg.device)
    runtime = Runtime(device, train_cfg.channels_last, resolve_precision(train_cfg.precision, device))
    model = runtime.prepare(create_segmenter(config.model, len(info.classes)))
    loss_fn = create_loss(train_cfg.loss, balance["weights"], info.ignore_index, train_cfg.focal_gamma)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    sampler_generator = (sampling.get("sampler") or train_loader.sampler).generator
    return _Session(
        model,
        optimizer,
        _schedule(config, optimizer, len(train_loader)),
        loss_fn.to(runtime.device),
        train_loader,
        DataLoader(val_set, batch_size=config.evaluate.batch_size),
        runtime,
        {"sampler": sampler_generator, "augment": train_set.generator},
        info.classes,
        info.ignore_index,
    )


def _fingerprint(config: Config) -> str:
    parts = {
        "project": config.project.model_dump(),
        "model": config.model.model_dump(),
        "train": config.train.model_dump(exclude={"num_threads"}),
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
            raise RuntimeError(f"cannot resume from {config.paths.checkpoint}: {why}; run without --resume")
        return TrainingState(fingerprint=current)
    session.model.load_state_dict(saved["model"])
    session.optimizer.load_state_dict(saved["optimizer"])
    session.scheduler.load_state_dict(saved["scheduler"])
    restore_rng(saved["rng"], session.generators)
    print(f"train: resuming after epoch {state.epoch}/{config.train.epochs} from {config.paths.checkpoint}")
    return state


def run(config: Config, resume: str = "auto") -> TrainResult:
    """Train, resuming from an unfinished checkpoint of the same params and data.

    ``resume``: ``auto`` (continue when possible, as after a killed ``dvc repro``), ``require`` (``--resume``:
    fail when there is nothing to continue) or ``never`` (``--fresh``).
    """
    paths, train_cfg = config.paths, config.train
    session = _build(config)
    state = _resume_point(config, session, resume)
    start = time.perf_counter()
    if state.run_id:
        run_context = tracking.continue_run(config, state.run_id)
    else:
        run_name = f"{config.model.arch}-{config.model.encoder}"
        run_context = tracking.start_run(config, run_name=run_name, tags=_lineage_tags(config))
    with run_context as run_info:
        if not state.run_id:
            _log_data_stages(config)
            state.run_id = run_info.run_id
        epochs = tqdm(
            range(state.epoch + 1, train_cfg.epochs + 1),
            desc="epochs",
            unit="epoch",
            initial=state.epoch,
            total=train_cfg.epochs,
        )
        for epoch in epochs:
            row = _train_epoch(session, epoch, train_cfg.grad_clip)
            epochs.set_postfix(loss=f"{row['train_loss']:.3f}", val_miou=f"{row['val_miou']:.3f}")
            if _record_epoch(config, session, state, row):
                save_model(
                    session.model,
                    paths.weights,
                    config.model,
                    session.classes,
                    session.ignore_index,
                    {"epoch": epoch, "val_miou": row["val_miou"]},
                )
            save_checkpoint(
                paths.checkpoint,
                model=session.model,
                optimizer=session.optimizer,
                scheduler=session.scheduler,
                state=state,
                generators=session.generators,
            )
            if train_cfg.early_stopping and state.epochs_without_improvement >= train_cfg.early_stopping:
                tqdm.write(f"train: stopping early, no better val mIoU for {train_cfg.early_stopping} epochs")
                break
        pd.DataFrame(state.history).to_csv(paths.history, index=False)
        tracking.log_artifact(paths.history, "training")
        tracking.log_metrics({"train/best_epoch": state.best_epoch, "train/best_val_miou": state.best_score})
        tracking.write_run_info(run_info, paths.run_info)
    seconds = time.perf_counter() - start
    print(
        f"train: best val mIoU {state.best_score:.4f} at epoch {state.best_epoch}/{train_cfg.epochs} "
        f"({seconds:.0f}s this session) -> {paths.weights}"
    )
    return TrainResult(state.best_epoch, state.best_score, state.epoch, seconds, state.run_id)


def _train_epoch(session: _Session, epoch: int, grad_clip: float | None) -> dict[str, float]:
    fit = train_one_epoch(
        session.model,
        session.train_loader,
        session.loss_fn,
        session.optimizer,
        session.runtime,
        session.scheduler,
        desc=f"epoch {epoch}",
        grad_clip=grad_clip,
    )
    val = evaluate(
        session.model, session.val_loader, session.loss_fn, len(session.classes), session.ignore_index, session.runtime
    )
    val_miou = segmentation_metrics(val.confusion, session.classes)["miou"]
    return {
        "epoch": epoch,
        "train_loss": fit["loss"],
        "val_loss": val.loss,
        "val_miou": val_miou,
        "lr": session.optimizer.param_groups[0]["lr"],
        "train_images_per_second": fit["images_per_second"],
    }


def _record_epoch(config: Config, session: _Session, state: TrainingState, row: dict[str, float]) -> bool:
    """Log the epoch, update the state; True when this epoch is the best so far."""
    state.epoch = int(row["epoch"])
    state.history.append(row)
    # "train/..." keeps the curves apart from evaluate's final val_* metrics of the chosen model
    tracking.log_metrics({f"train/{k}": v for k, v in row.items() if k != "epoch"}, step=state.epoch)
    tqdm.write(
        f"epoch {state.epoch:3d}  train_loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
        f"val_miou {row['val_miou']:.4f}  {row['train_images_per_second']:.1f} img/s"
    )
    if row["val_miou"] > state.best_score:
        state.best_score, state.best_epoch, state.epochs_without_improvement = row["val_miou"], state.epoch, 0
        return True
    state.epochs_without_improvement += 1
    return False


def _sampling(config: Config, sampler: str, rows: pd.DataFrame) -> dict[str, object]:
    """DataLoader arguments: a seeded shuffle, or a seeded weighted sampler over the repeat factors."""
    generator = torch.Generator().manual_seed(config.project.seed)
    if sampler == "none":
        return {"shuffle": True, "generator": generator}
    factors = torch.tensor(read_sample_weights(config, rows), dtype=torch.double)
    return {"sampler": WeightedRandomSampler(factors, num_samples=len(rows), replacement=True, generator=generator)}
