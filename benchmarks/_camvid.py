"""What the CamVid benchmarks share: their command-line options, the params overrides that point the pipeline
at CamVid, and how figures are reported."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def add_camvid_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--camvid", type=Path, default=REPO.parent / "shared" / "data" / "camvid")
    parser.add_argument("--input-size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--json", type=Path, help="also write the figures here")


def camvid_found(args: argparse.Namespace) -> bool:
    if (args.camvid / "train").is_dir():
        return True
    print(f"CamVid not found at {args.camvid}; pass --camvid", file=sys.stderr)
    return False


def camvid_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Params overrides (dotted keys) for the folder source with the CamVid preset and the common options."""
    return {
        "data.source": "folder",
        "data.root": str(args.camvid.resolve()),
        "data.preset": "camvid",
        "model.encoder": args.encoder,
        "train.batch_size": args.batch_size,
        "train.lr": args.lr,
        "train.input.size": list(args.input_size),
    }


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options as JSON-friendly values (the report records what was run)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"}


def per_class_iou(metrics: dict[str, float]) -> dict[str, float]:
    return {k.removeprefix("iou_"): round(v, 4) for k, v in metrics.items() if k.startswith("iou_")}


def write_json(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(report, indent=2) + "\n")
