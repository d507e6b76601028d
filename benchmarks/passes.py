"""How many passes over the training images the planner must leave in the budget (``planning.rules.MIN_PASSES``):
val mIoU on the built-in shapes against the number of passes, at full resolution and at half scale.

    python benchmarks/passes.py --json benchmarks/results/passes_builtin.json

Each arm pins every planned key (whole images resized to ``--sizes``, batch 8, the planner's lr for it, the
epochs) and runs prepare, validate, balance, plan, train and evaluate with the pipeline's stage functions in a
scratch directory (``plan.py``'s harness), so an arm costs what training costs and nothing is measured by the
plan stage. The table gives, per size and passes, val mIoU and the minutes of training: where the curve at full
resolution flattens is the minimum worth buying before the planner lowers the scale, and the half-scale row says
what lowering it costs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import _camvid as common
from plan import run_arm

BUILTIN = {"data.source": "builtin", "data.root": str(common.REPO / "src/visionflow/data/builtin.py"),
           "tracking.experiment": "passes-benchmark"}  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 32], help="square input sides (multiples of 32)")
    parser.add_argument("--passes", type=int, nargs="+", default=[5, 10, 20, 40], help="epochs (whole images)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--images", type=int, default=240, help="built-in images generated (params.yaml's default)")
    common.add_json_option(parser)
    return parser.parse_args()


def arm(size: int, passes: int, batch: int, images: int) -> dict[str, Any]:
    from visionflow.planning.rules import REFERENCE_BATCH, REFERENCE_LR

    pinned = {
        "train.input": {"size": [size, size], "policy": "resize"},
        "train.batch_size": batch,
        "train.lr": REFERENCE_LR * (batch / REFERENCE_BATCH) ** 0.5,  # rule 4, as the planner would set it
        "train.epochs": passes,
        "train.rare_crops": 0.333,
    }
    report = run_arm(f"{size}px-{passes}", BUILTIN | {"data.builtin.num_images": images} | pinned)
    return {k: report[k] for k in ("arm", "epochs", "best_epoch", "val_miou", "train_minutes")} | {"size": size}


def main() -> int:
    args = parse_args()
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        for passes in args.passes:
            rows.append(arm(size, passes, args.batch_size, args.images))
            common.write_json(args.json, {"settings": common.settings(args), "arms": rows})  # a cut run keeps these
    print("\n| input | passes | val mIoU | best epoch | training minutes |\n|---|---:|---:|---:|---:|")
    for row in rows:
        size = row["size"]
        print(f"| {size}x{size} | {row['epochs']} | {row['val_miou']} | {row['best_epoch']} | {row['train_minutes']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
