"""The full pipeline on CamVid under a wall-clock training budget: val mIoU, per-class IoU, time and img/s.

    python benchmarks/camvid.py --budget-minutes 40 --json camvid.json     # this CPU
    python benchmarks/camvid.py --budget-minutes 10                        # a CUDA GPU: same command

Runs prepare, validate and balance on ``--camvid`` with the pipeline's own stage functions in a temporary
working directory, times one calibration epoch, then trains from scratch for as many epochs as fit in the
budget (so the learning-rate schedule completes; where only one fits, the calibration run is kept), and
evaluates on val. Device and precision come from params
(``auto``: CUDA when present, bf16 where the hardware has it). Trains at 256x320 (``--input-size``, multiples
of 32) and scores val at each mask's own size (CamVid's 360x480). Prints the per-class table and the learning
curve; ``--json`` also holds every val image's mIoU and pixel accuracy (``per_image``), so that two runs can be
compared image by image.

CamVid is read from ``../shared/data/camvid`` beside the repository; from a clone elsewhere pass
``--camvid /path/to/camvid`` (the folder holding train/ trainannot/ val/ valannot/).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from typing import Any

import _camvid as common
import pandas as pd

from visionflow.config import Config
from visionflow.handoffs import ModelMeta


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-minutes", type=float, default=40.0, help="wall-clock budget for training")
    parser.add_argument("--arch", default="Unet")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more params overrides (YAML values)")
    common.add_camvid_arguments(parser)
    return parser.parse_args()


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    extra = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    fixed = {"model.arch": args.arch, "tracking.experiment": "camvid-benchmark",
             "train.augment": {"scale": [0.8, 1.25], "affine": 1.0}}  # fmt: skip
    return common.camvid_overrides(args) | fixed | extra


def train_within_budget(base: dict[str, Any], budget_minutes: float) -> tuple[Config, ModelMeta]:
    """Time one epoch, then train from scratch for as many epochs as fit in the budget (so the learning-rate
    schedule completes). Where one is all that fits, the timed run is that training: same params, same seed."""
    from visionflow.stages import train

    config = common.load_params(base | {"train.epochs": 1})
    trained = train.run(config, resume="never")
    calibration = common.training_seconds(config)
    epochs = max(1, math.floor(budget_minutes * 60 / calibration))
    print(f"\ncamvid: one epoch took {calibration:.0f}s; {epochs} epochs fit in {budget_minutes:g} min\n")
    if epochs > 1:
        config = common.load_params(base | {"train.epochs": epochs})
        trained = train.run(config, resume="never")
    return config, trained


def main() -> int:
    args = parse_args()
    if not common.camvid_found(args):
        return 2
    from visionflow.stages import balance, evaluate  # after the check: the stages take seconds to import

    with tempfile.TemporaryDirectory(prefix="vf-camvid-") as workdir:
        os.chdir(workdir)
        base = overrides(args)
        config = common.load_params(base)
        _, data_seconds = common.prepare_and_validate(config)
        balance.run(config)
        config, trained = train_within_budget(base, args.budget_minutes)
        metrics = evaluate.run(config).val
        history = pd.read_csv(config.paths.history)
        report = {
            "settings": common.settings(args),
            "epochs": trained.epochs,
            "data_seconds": round(data_seconds, 1),
            "train_seconds": round(common.training_seconds(config), 1),
            "train_images_per_second": round(float(history["train_images_per_second"].mean()), 2),
            "eval_images_per_second": round(float(metrics["images_per_second"]), 2),
            "val_miou": common.score(metrics["miou"]),
            "best_epoch": trained.epoch,
            "per_class_iou": common.per_class_iou(metrics),
            "curve": history[["epoch", "train_loss", "val_loss", "val_miou"]].round(4).to_dict(orient="records"),
            "per_image": common.per_image(config),
        }
    print_report(report)
    common.write_json(args.json, report)
    return 0


def print_report(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(
        f"\n{s['arch']}-{s['encoder']} {s['input_size'][0]}x{s['input_size'][1]}, {report['epochs']} epochs in "
        f"{report['train_seconds']}s (budget {s['budget_minutes']} min); prepare+validate {report['data_seconds']}s; "
        f"train {report['train_images_per_second']} img/s, eval {report['eval_images_per_second']} img/s"
    )
    print(f"val mIoU {report['val_miou']} (best epoch {report['best_epoch']})\n")
    print("| class | val IoU |\n|---|---:|")
    for name, value in report["per_class_iou"].items():
        print(f"| {name} | {'absent' if value is None else f'{value:.4f}'} |")
    print("\n| epoch | train loss | val loss | val mIoU |\n|---:|---:|---:|---:|")
    for row in report["curve"]:
        print(f"| {row['epoch']} | {row['train_loss']:.4f} | {row['val_loss']:.4f} | {row['val_miou']:.4f} |")


if __name__ == "__main__":
    sys.exit(main())
