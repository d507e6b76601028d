"""balance: class weights for the loss and per-image repeat factors for the sampler, from the train split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from visionflow.balance import class_frequencies, class_weights, presence, repeat_factors, sampled_shares
from visionflow.config import Config
from visionflow.handoffs import AcceptedManifest, ClassWeights, DatasetInfo, SampleWeights, count_columns
from visionflow.plots import plot_class_distribution

__all__ = ["run"]


def run(config: Config) -> ClassWeights:
    paths, settings = config.paths, config.balance
    info = DatasetInfo.read(paths)
    train = AcceptedManifest.read(paths).split("train")
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

    result = ClassWeights(
        settings.method,
        settings.sampler,
        info.classes,
        tuple(counts.sum(axis=0).tolist()),
        tuple(freq.round(8).tolist()),
        tuple(weights.round(6).tolist()),
        round(float(factors.mean()), 6),
    )
    result.write(paths)
    SampleWeights(
        pd.DataFrame({"id": train["id"], "image_path": train["image_path"], "repeat_factor": factors.round(6)})
    ).write(paths)
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
