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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from visionflow.config import Config, load_config  # noqa: E402
from visionflow.stages import balance, evaluate, prepare, train, validate  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "unbalanced": {"balance.method": "none", "balance.sampler": "none"},
    "balanced": {"balance.method": "median_frequency", "balance.sampler": "repeat_factor"},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--camvid", type=Path, default=REPO.parent / "shared" / "data" / "camvid")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--input-size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--loss", default="ce", help="loss terms joined by '+', e.g. ce or ce+dice")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


def base_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "data.source": "folder",
        "data.root": str(args.camvid.resolve()),
        "data.preset": "camvid",
        "model.encoder": args.encoder,
        "train.epochs": args.epochs,
        "train.batch_size": args.batch_size,
        "train.lr": args.lr,
        "train.input_size": list(args.input_size),
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
    if not (args.camvid / "train").is_dir():
        print(f"CamVid not found at {args.camvid}; pass --camvid", file=sys.stderr)
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
        "settings": {k: v for k, v in vars(args).items() if k != "json"} | {"camvid": str(args.camvid)},
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
            "per_class_iou": {k.removeprefix("iou_"): round(v, 4) for k, v in m.items() if k.startswith("iou_")},
            "train_seconds": result["train_seconds"],
            "best_epoch": result["best_epoch"],
        }
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
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
