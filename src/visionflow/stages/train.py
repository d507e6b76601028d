"""train: fit the segmentation model, keep the best epoch by val mIoU, and open the MLflow run for this model."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm import tqdm

from visionflow import tracking
from visionflow.config import Config
from visionflow.data.dataset import SegmentationDataset
from visionflow.data.manifest import read_dataset_info, read_manifest, split_rows
from visionflow.engine import Runtime, evaluate, resolve_device, train_one_epoch
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


def run(config: Config) -> TrainResult:
    paths, train_cfg = config.paths, config.train
    seed_everything(config.project.seed)
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    info = read_dataset_info(paths.dataset_info)
    manifest = read_manifest(paths.accepted, made_by="validate")
    balance = read_balance(config)
    num_classes = len(info.classes)

    train_rows = split_rows(manifest, "train", paths.accepted)
    train_set = SegmentationDataset(train_rows, augment=True, seed=config.project.seed, size=train_cfg.input_size)
    val_set = SegmentationDataset(split_rows(manifest, "val", paths.accepted), size=train_cfg.input_size)
    train_loader = DataLoader(
        train_set,
        batch_size=train_cfg.batch_size,
        drop_last=len(train_set) > train_cfg.batch_size,
        **_sampling(config, balance["sampler"], train_rows),
    )
    val_loader = DataLoader(val_set, batch_size=config.evaluate.batch_size)

    runtime = Runtime(resolve_device(train_cfg.device), train_cfg.channels_last, train_cfg.precision)
    model = runtime.prepare(create_segmenter(config.model, num_classes))
    loss_fn = create_loss(train_cfg.loss, balance["weights"], info.ignore_index, train_cfg.focal_gamma)
    loss_fn = loss_fn.to(runtime.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=train_cfg.lr,
        epochs=train_cfg.epochs,
        steps_per_epoch=len(train_loader),
        pct_start=0.15,
    )

    history: list[dict[str, float]] = []
    best_miou, best_epoch, start = -1.0, 0, time.perf_counter()
    with tracking.start_run(
        config, run_name=f"{config.model.arch}-{config.model.encoder}", tags=_lineage_tags(config)
    ) as run_info:
        _log_data_stages(config)
        epochs = tqdm(range(1, train_cfg.epochs + 1), desc="epochs", unit="epoch")
        for epoch in epochs:
            fit = train_one_epoch(model, train_loader, loss_fn, optimizer, runtime, scheduler, desc=f"epoch {epoch}")
            val = evaluate(model, val_loader, loss_fn, num_classes, info.ignore_index, runtime)
            val_miou = segmentation_metrics(val.confusion, info.classes)["miou"]
            row = {
                "epoch": epoch,
                "train_loss": fit["loss"],
                "val_loss": val.loss,
                "val_miou": val_miou,
                "lr": optimizer.param_groups[0]["lr"],
                "train_images_per_second": fit["images_per_second"],
            }
            history.append(row)
            # "train/..." keeps the curves apart from evaluate's final val_* metrics of the chosen model
            tracking.log_metrics({f"train/{k}": v for k, v in row.items() if k != "epoch"}, step=epoch)
            epochs.set_postfix(loss=f"{fit['loss']:.3f}", val_miou=f"{val_miou:.3f}")
            tqdm.write(
                f"epoch {epoch:3d}  train_loss {fit['loss']:.4f}  val_loss {val.loss:.4f}  "
                f"val_miou {val_miou:.4f}  {fit['images_per_second']:.1f} img/s"
            )
            if val_miou > best_miou:
                best_miou, best_epoch = val_miou, epoch
                save_model(
                    model,
                    paths.weights,
                    config.model,
                    info.classes,
                    info.ignore_index,
                    {"epoch": epoch, "val_miou": val_miou},
                )
        _save_checkpoint(paths.checkpoint, model, optimizer, scheduler, train_cfg.epochs)
        pd.DataFrame(history).to_csv(paths.history, index=False)
        tracking.log_artifact(paths.history, "training")
        tracking.log_metrics({"train/best_epoch": best_epoch, "train/best_val_miou": best_miou})
        tracking.write_run_info(run_info, paths.run_info)
    seconds = time.perf_counter() - start
    print(
        f"train: best val mIoU {best_miou:.4f} at epoch {best_epoch}/{train_cfg.epochs} in {seconds:.0f}s "
        f"-> {paths.weights}"
    )
    return TrainResult(best_epoch, best_miou, train_cfg.epochs, seconds, run_info.run_id)


def _sampling(config: Config, sampler: str, rows: pd.DataFrame) -> dict[str, object]:
    """DataLoader arguments: a seeded shuffle, or a seeded weighted sampler over the repeat factors."""
    generator = torch.Generator().manual_seed(config.project.seed)
    if sampler == "none":
        return {"shuffle": True, "generator": generator}
    factors = torch.tensor(read_sample_weights(config, rows), dtype=torch.double)
    return {"sampler": WeightedRandomSampler(factors, num_samples=len(rows), replacement=True, generator=generator)}


def _save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
) -> None:
    """The full training state after ``epoch`` (tensors and plain values: loads with weights_only=True)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
        },
        path,
    )
