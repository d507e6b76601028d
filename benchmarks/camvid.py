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
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from visionflow.config import load_config  # noqa: E402
from visionflow.stages import balance, evaluate, prepare, train, validate  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--camvid", type=Path, default=REPO.parent / "shared" / "data" / "camvid")
    parser.add_argument("--budget-minutes", type=float, default=40.0, help="wall-clock budget for training")
    parser.add_argument("--input-size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--arch", default="Unet")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more params overrides (YAML values)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    extra = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    return {
        "data.source": "folder",
        "data.root": str(args.camvid.resolve()),
        "data.preset": "camvid",
        "model.arch": args.arch,
        "model.encoder": args.encoder,
        "train.batch_size": args.batch_size,
        "train.lr": args.lr,
        "train.input_size": list(args.input_size),
        "tracking.experiment": "camvid-benchmark",
        **extra,
    }


def main() -> int:
    args = parse_args()
    if not (args.camvid / "train").is_dir():
        print(f"CamVid not found at {args.camvid}; pass --camvid", file=sys.stderr)
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
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"},
        "epochs": epochs,
        "data_seconds": round(data_seconds, 1),
        "train_seconds": round(trained.seconds, 1),
        "train_images_per_second": round(float(history["train_images_per_second"].mean()), 2),
        "eval_images_per_second": round(metrics["images_per_second"], 2),
        "val_miou": round(metrics["miou"], 4),
        "best_epoch": trained.best_epoch,
        "per_class_iou": {k.removeprefix("iou_"): round(v, 4) for k, v in metrics.items() if k.startswith("iou_")},
        "curve": history[["epoch", "train_loss", "val_loss", "val_miou"]].round(4).to_dict(orient="records"),
    }
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
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
