"""The planner's evidence: planned train settings against hand-set or whole-image ones, through the same harness
and seed, with the paired per-image bootstrap interval of the val mIoU difference and the IoU of the four rarest
classes by train pixel share.

    python benchmarks/plan.py camvid --reference camvid.json --json plan_camvid.json   # 40 min of training
    python benchmarks/plan.py wires --json plan_wires.json                              # 10 min per arm

``camvid``: the pipeline with every planned key ``auto`` and ``plan.budget_minutes`` = ``--budget-minutes`` (40),
params changed only in ``data``, against ``benchmarks/camvid.py`` at its defaults (the hand-tuned reference): its
``--json`` report from the same commit via ``--reference``, or, without one, ``camvid.py`` run here first.

``wires``: the built-in wires set (``data.builtin.kind: wires``: 1024 px images, wires 3 px and rivets 7 px wide
at every size; fixed before any rule was tuned on it), planned with every key ``auto`` against the resize
baseline: the same planner with ``plan.crops: false``, which takes the largest whole-image size that fits the same
budget (``--budget-minutes`` 10 each).

Each arm runs prepare, validate, balance, plan, train and evaluate with the pipeline's stage functions in a
temporary working directory. The report gives, per arm, the plan table, the epochs' wall time against the budget
(train's ``train/seconds``), val mIoU and the rarest classes' IoU; and the mean per-image mIoU difference
(planned minus other) with its 95% paired bootstrap interval (``visionflow.gate.paired_bootstrap``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import _camvid as common
import numpy as np

from visionflow.config import PLANNED

USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")  # a store the user chose: both arms log there
RESAMPLES, CONFIDENCE, SEED = 10_000, 0.95, 0  # the bootstrap, as the promotion gate's defaults
RAREST = 4  # classes reported by train pixel share
AUTO = {f"train.{key}": "auto" for key in PLANNED}
WIRES = {  # the large-image set, as defined before any tuning (visionflow.data.builtin)
    "data.source": "builtin",
    "data.root": str(common.REPO / "src/visionflow/data/builtin.py"),
    "data.builtin.kind": "wires",
    "data.builtin.image_size": 1024,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=["camvid", "wires"])
    parser.add_argument("--budget-minutes", type=float, help="training budget per arm (default camvid 40, wires 10)")
    parser.add_argument("--images", type=int, default=120, help="wires: images generated (train, val)")
    parser.add_argument("--reference", type=common.absolute,
                        help="camvid: benchmarks/camvid.py's --json report to compare with")  # fmt: skip
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="params overrides (YAML values) for the planned arms, applied last")  # fmt: skip
    common.add_camvid_option(parser)
    common.add_json_option(parser)
    args = parser.parse_args()
    args.budget_minutes = args.budget_minutes or (40.0 if args.dataset == "camvid" else 10.0)
    return args


def extra(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    return {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}


def run_arm(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """One arm through the pipeline's stages in a scratch directory: its plan, time, scores and per-image mIoU."""
    from visionflow import tracking
    from visionflow.handoffs import TrainingRun
    from visionflow.stages import balance, evaluate, plan, train

    home = Path.cwd()
    with tempfile.TemporaryDirectory(prefix=f"vf-plan-{name}-") as workdir:
        os.chdir(workdir)
        if not USER_TRACKING_URI:  # mlflow.set_tracking_uri exports the last arm's store: each arm has its own
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        try:
            config = common.load_params(overrides)
            _, data_seconds = common.prepare_and_validate(config)
            weights = balance.run(config)
            made = plan.run(config)
            trained = train.run(config, resume="never")
            metrics = evaluate.run(config).val
            run = TrainingRun.read(config.paths)
            seconds = tracking.client(config).get_run(run.run_id).data.metrics["train/seconds"]
            report = {
                "arm": name,
                "plan": made.table(),
                "plan_notes": list(made.notes),
                "budget_minutes": made.budget_minutes,
                "estimated_minutes": made.estimated_minutes,
                "train_minutes": round(seconds / 60, 2),
                "timed": "the epoch loop (train/seconds)",
                "data_seconds": round(data_seconds, 1),
                "epochs": trained.epochs,
                "best_epoch": trained.epoch,
                "val_miou": common.score(metrics["miou"]),
                "corruption_mean": common.score(metrics.get("corruption_mean")),  # null: evaluate.corruptions off
                "per_class_iou": common.per_class_iou(metrics),
                "rarest": weights.rarest(RAREST),
                "per_image": common.per_image(config),
            }
        finally:
            os.chdir(home)
    return report


def reference(args: argparse.Namespace) -> dict[str, Any]:
    """benchmarks/camvid.py's report: the one given, or a run at its defaults now (same budget)."""
    path = args.reference
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="vf-plan-reference-")) / "camvid.json"
        command = [sys.executable, str(common.REPO / "benchmarks/camvid.py"), "--camvid", str(args.camvid),
                   "--budget-minutes", str(args.budget_minutes), "--json", str(path)]  # fmt: skip
        subprocess.run(command, check=True)
    report = json.loads(path.read_text())
    settings = report["settings"]
    size = settings["input_size"]
    report["arm"] = "reference"
    report["plan"] = (
        f"benchmarks/camvid.py: {settings['arch']}-{settings['encoder']}, resize {size[0]}x{size[1]}, batch "
        f"{settings['batch_size']}, lr {settings['lr']}, {report['epochs']} epochs (one timed epoch, then as many "
        f"as fit in {settings['budget_minutes']} min)"
    )
    report["train_minutes"] = round(report["train_seconds"] / 60, 2)
    report["timed"] = "the train and val passes (history.csv)"
    return report


def compare(planned: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """The paired per-image difference of mIoU (planned minus other) with its bootstrap interval, and the rarest
    classes' IoU in both."""
    from visionflow.gate import paired_bootstrap

    ids = sorted(set(planned["per_image"]) & set(other["per_image"]))
    pairs = [(planned["per_image"][i]["miou"], other["per_image"][i]["miou"]) for i in ids]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    differences = np.array([a - b for a, b in pairs], dtype=np.float64)
    mean, low, high = paired_bootstrap(differences, RESAMPLES, CONFIDENCE, SEED)
    rare = planned["rarest"]
    return {
        "images": len(pairs),
        "mean_difference": round(mean, 4),
        "interval": [round(low, 4), round(high, 4)],
        "rarest": {name: [planned["per_class_iou"].get(name), other["per_class_iou"].get(name)] for name in rare},
        "rarest_mean": [_mean(planned["per_class_iou"], rare), _mean(other["per_class_iou"], rare)],
    }


def _mean(iou: dict[str, float | None], names: list[str]) -> float | None:
    values = [iou[n] for n in names if iou.get(n) is not None]
    return round(float(np.mean(values)), 4) if values else None


def print_report(report: dict[str, Any]) -> None:
    planned, other, diff = report["planned"], report["other"], report["comparison"]
    for arm in (planned, other):
        print(f"\n## {arm['arm']}\n\n{arm['plan']}")
        budget = arm.get("budget_minutes")
        spent = f"{arm['train_minutes']} min of training, {arm['timed']}"
        spent += f", budget {budget:g} min" if budget else ""
        print(f"\n{spent}, {arm['epochs']} epochs (best {arm['best_epoch']}); val mIoU {arm['val_miou']}")
    names = list(diff["rarest"])
    print(f"\n| | planned | {other['arm']} |\n|---|---:|---:|")
    print(f"| val mIoU | {planned['val_miou']} | {other['val_miou']} |")
    print(f"| training minutes | {planned['train_minutes']} | {other['train_minutes']} |")
    for name in names:
        print(f"| IoU {name} | {diff['rarest'][name][0]} | {diff['rarest'][name][1]} |")
    print(f"| mean IoU of the {len(names)} rarest | {diff['rarest_mean'][0]} | {diff['rarest_mean'][1]} |")
    print("\n" + difference_line("planned", other["arm"], diff))


def difference_line(one: str, other: str, diff: dict[str, Any]) -> str:
    """The paired comparison (:func:`compare`) in words: ``one`` minus ``other``, the mean and its interval."""
    low, high = diff["interval"]
    return (
        f"{one} - {other}: mean per-image mIoU difference {diff['mean_difference']:+.4f}, 95% paired bootstrap "
        f"interval [{low:+.4f}, {high:+.4f}] over {diff['images']} val images"
    )


def main() -> int:
    args = parse_args()
    if args.dataset == "camvid":
        if not common.camvid_found(args):
            return 2
        data = {"data.source": "folder", "data.root": str(args.camvid.resolve()), "data.preset": "camvid"}
        base = data | {"plan.budget_minutes": args.budget_minutes}
        other = reference(args)
        planned = run_arm("planned", base | AUTO | extra(args))
    else:
        base = WIRES | {"data.builtin.num_images": args.images, "plan.budget_minutes": args.budget_minutes}
        base |= {"tracking.experiment": "plan-benchmark"}
        planned = run_arm("planned", base | AUTO | extra(args))
        other = run_arm("resize", base | AUTO | {"plan.crops": False} | extra(args))
    report = {
        "dataset": args.dataset,
        "settings": common.settings(args),
        "planned": planned,
        "other": other,
        "comparison": compare(planned, other),
    }
    print_report(report)
    common.write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
