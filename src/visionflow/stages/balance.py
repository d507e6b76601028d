"""balance: class weights for the loss and per-image repeat factors for the sampler, from the train split."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from visionflow.balance import class_frequencies, class_weights, presence, repeat_factors, sampled_shares
from visionflow.config import Config
from visionflow.data.manifest import count_columns, read_dataset_info, read_manifest, split_rows
from visionflow.plots import plot_class_distribution

__all__ = ["BalanceResult", "read_balance", "read_sample_weights", "run"]


@dataclass(frozen=True)
class BalanceResult:
    method: str
    sampler: str
    classes: list[str]
    pixel_counts: list[int]
    frequencies: list[float]
    weights: list[float]
    mean_repeat_factor: float


def run(config: Config) -> BalanceResult:
    paths, settings = config.paths, config.balance
    info = read_dataset_info(paths.dataset_info)
    train = split_rows(read_manifest(paths.accepted, made_by="validate"), "train", paths.accepted)
    counts = train[count_columns(len(info.classes))].to_numpy(dtype=np.int64)
    labelled = counts.sum(axis=1)
    per_image = config.project.task == "classification"  # counts are one per image: balance by image counts
    freq = class_frequencies(counts, labelled, per_image)
    weights = class_weights(counts, labelled, settings.method, settings.beta, settings.clip, per_image)
    present = presence(counts, settings.presence_share)
    factors = (
        repeat_factors(present, settings.repeat_threshold)
        if settings.sampler == "repeat_factor"
        else (np.ones(len(train)))
    )
    sampled_pixels, sampled_images = sampled_shares(counts, present, factors)

    result = BalanceResult(
        settings.method,
        settings.sampler,
        list(info.classes),
        counts.sum(axis=0).tolist(),
        freq.round(8).tolist(),
        weights.round(6).tolist(),
        round(float(factors.mean()), 6),
    )
    paths.balance.mkdir(parents=True, exist_ok=True)
    paths.class_weights.write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    pd.DataFrame({"id": train["id"], "image_path": train["image_path"], "repeat_factor": factors.round(6)}).to_csv(
        paths.sample_weights, index=False
    )
    table = pd.DataFrame(
        {
            "class": info.classes,
            "pixel_share": (counts.sum(axis=0) / max(counts.sum(), 1)).round(6),
            "sampled_pixel_share": sampled_pixels.round(6),
            "image_share": present.mean(axis=0).round(6),
            "sampled_image_share": sampled_images.round(6),
            "weight": weights.round(6),
        }
    )
    table.to_csv(paths.class_distribution, index=False)
    plot_class_distribution(
        table, paths.class_distribution_plot, title=f"train classes: stored vs sampled ({settings.sampler})"
    )
    _print_table(config, table, factors, len(train))
    return result


def _print_table(config: Config, table: pd.DataFrame, factors: np.ndarray, images: int) -> None:
    settings = config.balance
    print(
        f"balance: {settings.method} weights, {settings.sampler} sampler over {images} train images "
        f"(repeat factor mean {factors.mean():.2f}, max {factors.max():.2f})"
    )
    print(f"  {'class':<14} {'pixels':>8} {'sampled':>8} {'images':>7} {'sampled':>8} {'weight':>7}")
    for row in table.itertuples():
        print(
            f"  {row[1]:<14} {row.pixel_share:8.2%} {row.sampled_pixel_share:8.2%} {row.image_share:7.1%} "
            f"{row.sampled_image_share:8.1%} {row.weight:7.3f}"
        )


def read_balance(config: Config) -> dict:
    """What the balance stage decided (class weights, sampler); names the stage to run when missing."""
    path = config.paths.class_weights
    if not path.is_file():
        raise FileNotFoundError(f"{path}: class weights not found; run `visionflow balance`")
    return json.loads(path.read_text(encoding="utf-8"))


def read_sample_weights(config: Config, rows: pd.DataFrame) -> np.ndarray:
    """Repeat factors aligned with ``rows`` (the train rows training uses); every row must have one."""
    path = config.paths.sample_weights
    if not path.is_file():
        raise FileNotFoundError(f"{path}: sample weights not found; run `visionflow balance`")
    factors = pd.read_csv(path).set_index("image_path")["repeat_factor"]
    missing = set(rows["image_path"]) - set(factors.index)
    if missing:
        raise ValueError(
            f"{path} has no repeat factor for {len(missing)} train image(s), e.g. {sorted(missing)[0]}; "
            "run `dvc repro balance`"
        )
    return factors.loc[rows["image_path"]].to_numpy(dtype=np.float64)
