"""The full pipeline on CamVid under a wall-clock training budget: val mIoU, per-class IoU, time and img/s.

    python benchmarks/camvid.py --budget-minutes 40 --json camvid.json     # this CPU
    python benchmarks/camvid.py --budget-minutes 10                        # a CUDA GPU: same command

Runs prepare, validate and balance on ``--camvid`` with the pipeline's own stage functions in a temporary
working directory, times one calibration epoch, then trains from scratch for as many epochs as fit in the
budget (so the learning-rate schedule completes), and evaluates on val. Device and precision come from params
(``auto``: CUDA when present, bf16 where the hardware has it). Prints the per-class table and the learning curve.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from typing import Any

import pandas as pd
from _camvid import REPO, add_camvid_arguments, camvid_found, camvid_overrides, per_class_iou, settings, write_json

from visionflow.config import load_config
from visionflow.stages import balance, evaluate, prepare, train, validate


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-minutes", type=float, default=40.0, help="wall-clock budget for training")
    parser.add_argument("--arch", default="Unet")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more params overrides (YAML values)")
    add_camvid_arguments(parser)
    return parser.parse_args()


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    extra = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    fixed = {"model.arch": args.arch, "tracking.experiment": "camvid-benchmark", "train.augment.scale": [0.8, 1.25]}
    return camvid_overrides(args) | fixed | extra


def main() -> int:
    args = parse_args()
    if not camvid_found(args):
        return 2
    with tempfile.TemporaryDirectory(prefix="vf-camvid-") as workdir:
        os.chdir(workdir)
        base = overrides(args)
        config = load_config(REPO / "params.yaml", base | {"train.epochs": 1})
        start = time.perf_counter()
        prepare.run(config)
        validate.run(config)
        data_seconds = time.perf_counter() - start
        balance.run(config)
        calibration = train.run(config, resume="never").seconds
        budget = args.budget_minutes * 60
        epochs = max(1, math.floor(budget / calibration))
        print(f"\ncamvid: one epoch took {calibration:.0f}s; {epochs} epochs fit in {args.budget_minutes:g} min\n")
        config = load_config(REPO / "params.yaml", base | {"train.epochs": epochs})
        trained = train.run(config, resume="never")
        metrics = evaluate.run(config).metrics
        history = pd.read_csv(config.paths.history)
    report = {
        "settings": settings(args),
        "epochs": epochs,
        "data_seconds": round(data_seconds, 1),
        "train_seconds": round(trained.seconds, 1),
        "train_images_per_second": round(float(history["train_images_per_second"].mean()), 2),
        "eval_images_per_second": round(metrics["images_per_second"], 2),
        "val_miou": round(metrics["miou"], 4),
        "best_epoch": trained.best_epoch,
        "per_class_iou": per_class_iou(metrics),
        "curve": history[["epoch", "train_loss", "val_loss", "val_miou"]].round(4).to_dict(orient="records"),
    }
    print_report(report)
    write_json(args.json, report)
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
        print(f"| {name} | {value:.4f} |")
    print("\n| epoch | train loss | val loss | val mIoU |\n|---:|---:|---:|---:|")
    for row in report["curve"]:
        print(f"| {row['epoch']} | {row['train_loss']:.4f} | {row['val_loss']:.4f} | {row['val_miou']:.4f} |")


if __name__ == "__main__":
    sys.exit(main())
