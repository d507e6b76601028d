"""Does balancing help the rare classes? Two trainings on CamVid at the same budget, one table.

    python benchmarks/balance_camvid.py --epochs 15 --json balance.json

Runs prepare and validate once on ``--camvid`` (timed), then trains the same model twice for the same number
of epochs: (a) no balancing (unweighted loss, uniform shuffling) and (b) median-frequency class weights plus
repeat-factor sampling. Prints per-class IoU of the four rarest classes (by train pixel share), their mean, and
the mIoU of both, and the time validation took. Everything runs through the pipeline's own stage functions in a
temporary working directory; nothing is written to the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

from _camvid import REPO, add_camvid_arguments, camvid_found, camvid_overrides, per_class_iou, settings, write_json

from visionflow.config import Config, load_config
from visionflow.stages import balance, evaluate, prepare, train, validate

VARIANTS: dict[str, dict[str, Any]] = {
    "unbalanced": {"balance.method": "none", "balance.sampler": "none"},
    "balanced": {"balance.method": "median_frequency", "balance.sampler": "repeat_factor"},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--loss", default="ce", help="loss terms joined by '+', e.g. ce or ce+dice")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    add_camvid_arguments(parser)
    return parser.parse_args()


def base_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return camvid_overrides(args) | {
        "train.epochs": args.epochs,
        "train.precision": args.precision,
        "train.loss": dict.fromkeys(args.loss.split("+"), 1.0),
    }


def train_variant(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    config = load_config(REPO / "params.yaml", overrides | VARIANTS[name] | {"tracking.experiment": f"bench-{name}"})
    balance.run(config)
    start = time.perf_counter()
    trained = train.run(config)
    seconds = time.perf_counter() - start
    metrics = evaluate.run(config).metrics
    return {"metrics": metrics, "train_seconds": round(seconds, 1), "best_epoch": trained.best_epoch}


def rarest(config: Config, count: int = 4) -> list[str]:
    table = json.loads(config.paths.class_weights.read_text())
    order = sorted(zip(table["pixel_counts"], table["classes"], strict=True))
    return [name for _, name in order[:count]]


def main() -> int:
    args = parse_args()
    if not camvid_found(args):
        return 2
    overrides = base_overrides(args)
    with tempfile.TemporaryDirectory(prefix="vf-balance-") as workdir:
        os.chdir(workdir)
        config = load_config(REPO / "params.yaml", overrides)
        start = time.perf_counter()
        prepare.run(config)
        summary = validate.run(config)
        validation_seconds = time.perf_counter() - start
        results = {name: train_variant(name, overrides) for name in VARIANTS}
        rare = rarest(config)
    report = {
        "settings": settings(args),
        "validation": {"images": summary.inputs, "accepted": summary.accepted, "seconds": round(validation_seconds, 1)},
        "rarest_classes": rare,
        "variants": {},
    }
    for name, result in results.items():
        m = result["metrics"]
        rare_iou = {c: round(m[f"iou_{c}"], 4) for c in rare}
        report["variants"][name] = {
            "rare_iou": rare_iou,
            "rare_mean_iou": round(sum(rare_iou.values()) / len(rare_iou), 4),
            "miou": round(m["miou"], 4),
            "per_class_iou": per_class_iou(m),
            "train_seconds": result["train_seconds"],
            "best_epoch": result["best_epoch"],
        }
    print_table(report)
    write_json(args.json, report)
    return 0


def print_table(report: dict[str, Any]) -> None:
    v = report["validation"]
    s = report["settings"]
    print(f"\nvalidation: {v['images']} images ({v['accepted']} accepted) in {v['seconds']} s (prepare + validate)")
    print(
        f"training: {s['encoder']} Unet, {s['input_size'][0]}x{s['input_size'][1]}, {s['epochs']} epochs, "
        f"batch {s['batch_size']}, loss {s['loss']}, {s['precision']}"
    )
    names = list(report["variants"])
    print(f"\n| class | {' | '.join(names)} |\n|---|{'---:|' * len(names)}")
    for cls in report["rarest_classes"]:
        print(f"| {cls} | " + " | ".join(f"{report['variants'][n]['rare_iou'][cls]:.4f}" for n in names) + " |")
    for key, label in (
        ("rare_mean_iou", "mean of the 4 rarest"),
        ("miou", "mIoU (11 classes)"),
        ("train_seconds", "training seconds"),
    ):
        print(f"| {label} | " + " | ".join(f"{report['variants'][n][key]}" for n in names) + " |")


if __name__ == "__main__":
    sys.exit(main())
