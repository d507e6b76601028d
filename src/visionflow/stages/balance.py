"""balance: class pixel frequencies of the train split and the class weights training uses."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import pandas as pd

from visionflow.balance import class_frequencies, class_weights
from visionflow.config import Config
from visionflow.data.manifest import count_columns, read_dataset_info, read_manifest, split_rows

__all__ = ["BalanceResult", "read_class_weights", "run"]


@dataclass(frozen=True)
class BalanceResult:
    method: str
    classes: list[str]
    pixel_counts: list[int]
    frequencies: list[float]
    weights: list[float]


def run(config: Config) -> BalanceResult:
    paths = config.paths
    info = read_dataset_info(paths.dataset_info)
    manifest = read_manifest(paths.accepted, made_by="validate")
    train = split_rows(manifest, "train", paths.accepted)
    columns = count_columns(len(info.classes))
    counts = train[columns].to_numpy(dtype="int64")
    labelled = counts.sum(axis=1)
    freq = class_frequencies(counts, labelled)
    weights = class_weights(counts, labelled, config.balance.method, config.balance.beta, config.balance.clip)
    result = BalanceResult(
        config.balance.method,
        list(info.classes),
        counts.sum(axis=0).tolist(),
        freq.round(8).tolist(),
        weights.round(6).tolist(),
    )
    paths.class_weights.parent.mkdir(parents=True, exist_ok=True)
    paths.class_weights.write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    share = counts.sum(axis=0) / max(counts.sum(), 1)
    pd.DataFrame({"class": info.classes, "pixel_share": share.round(6), "weight": weights.round(6)}).to_csv(
        paths.class_distribution, index=False
    )
    print(f"balance: {config.balance.method} weights over {len(train)} train images")
    for name, s, w in zip(info.classes, share, weights, strict=True):
        print(f"  {name:<14} share {s:7.2%}  weight {w:6.3f}")
    return result


def read_class_weights(config: Config) -> list[float]:
    path = config.paths.class_weights
    if not path.is_file():
        raise FileNotFoundError(f"{path}: class weights not found; run `visionflow balance`")
    return [float(w) for w in json.loads(path.read_text(encoding="utf-8"))["weights"]]
