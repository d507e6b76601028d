"""Does balancing help the rare classes? Two trainings on CamVid at the same budget, one table.

    python benchmarks/balance_camvid.py --epochs 15 --json balance.json

Runs prepare and validate once on ``--camvid`` (timed), then trains the same model twice for the same number
of epochs: (a) no balancing (unweighted loss, uniform shuffling) and (b) median-frequency class weights plus
repeat-factor sampling. Prints per-class IoU of the four rarest classes (by train pixel share), their mean, and
the mIoU of both, and the time validation took. Everything runs through the pipeline's own stage functions in a
temporary working directory; nothing is written to the repository. Trains at 256x320 (``--input-size``,
multiples of 32) and scores val at each mask's own size (CamVid's 360x480).

CamVid is read from ``../shared/data/camvid`` beside the repository; from a clone elsewhere pass
``--camvid /path/to/camvid`` (the folder holding train/ trainannot/ val/ valannot/).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any

import _camvid as common

from visionflow.handoffs import ClassWeights

RARE = 4  # how many of the rarest classes (by train pixels) the table shows

VARIANTS: dict[str, dict[str, Any]] = {
    "unbalanced": {"balance.method": "none", "balance.sampler": "none"},
    "balanced": {"balance.method": "median_frequency", "balance.sampler": "repeat_factor"},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--loss", default="ce", help="loss terms joined by '+', e.g. ce or ce+dice")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    common.add_camvid_arguments(parser)
    return parser.parse_args()


def base_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return common.camvid_overrides(args) | {
        "train.epochs": args.epochs,
        "train.precision": args.precision,
        "train.loss": dict.fromkeys(args.loss.split("+"), 1.0),
    }


def train_variant(name: str, overrides: dict[str, Any]) -> tuple[dict[str, Any], ClassWeights]:
    """Balance, train and evaluate one variant: its scores, and the class table balance computed."""
    from visionflow.stages import balance, evaluate, train  # here, not above: a missing CamVid is reported at once

    config = common.load_params(overrides | VARIANTS[name] | {"tracking.experiment": f"bench-{name}"})
    weights = balance.run(config)
    trained = train.run(config, resume="never")
    metrics = evaluate.run(config).val
    result = {
        "metrics": metrics,
        "train_seconds": round(common.training_seconds(config), 1),
        "best_epoch": trained.epoch,
    }
    return result, weights


def variant_report(result: dict[str, Any], rare: list[str]) -> dict[str, Any]:
    metrics = result["metrics"]
    rare_iou = {c: common.score(metrics[f"iou_{c}"]) for c in rare}
    defined = [v for v in rare_iou.values() if v is not None]  # a class absent from val has no IoU
    return {
        "rare_iou": rare_iou,
        "rare_mean_iou": round(sum(defined) / len(defined), 4) if defined else None,
        "miou": common.score(metrics["miou"]),
        "per_class_iou": common.per_class_iou(metrics),
        "train_seconds": result["train_seconds"],
        "best_epoch": result["best_epoch"],
    }


def main() -> int:
    args = parse_args()
    if not common.camvid_found(args):
        return 2
    overrides = base_overrides(args)
    with tempfile.TemporaryDirectory(prefix="vf-balance-") as workdir:
        os.chdir(workdir)
        summary, validation_seconds = common.prepare_and_validate(common.load_params(overrides))
        results = {name: train_variant(name, overrides) for name in VARIANTS}
    rare = next(iter(results.values()))[1].rarest(RARE)  # train pixel counts: the same whatever the method
    report = {
        "settings": common.settings(args),
        "validation": {"images": summary.inputs, "accepted": summary.accepted, "seconds": round(validation_seconds, 1)},
        "rarest_classes": rare,
        "variants": {name: variant_report(result, rare) for name, (result, _) in results.items()},
    }
    print_table(report)
    common.write_json(args.json, report)
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
        print(f"| {cls} | " + " | ".join(f"{report['variants'][n]['rare_iou'][cls]}" for n in names) + " |")
    for key, label in (
        ("rare_mean_iou", f"mean of the {RARE} rarest"),
        ("miou", "mIoU (11 classes)"),
        ("train_seconds", "training seconds"),
    ):
        print(f"| {label} | " + " | ".join(f"{report['variants'][n][key]}" for n in names) + " |")


if __name__ == "__main__":
    sys.exit(main())
