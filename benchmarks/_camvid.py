"""What the benchmarks share: where CamVid is and what to say when it is not there, the command-line options, the
params overrides that point the pipeline at CamVid, the data stages they all run first, and how figures are
reported (settings, per-class IoU, training time, JSON).

CamVid is looked for at ``../shared/data/camvid`` beside the repository (:data:`CAMVID`); from a clone elsewhere
pass ``--camvid /path/to/camvid`` (a folder holding ``train/ trainannot/ val/ valannot/``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # the scripts run from a checkout, installed or not

if TYPE_CHECKING:  # the speed benchmarks import this module too: no stage imports (MLflow, GX) for them
    from visionflow.config import Config
    from visionflow.handoffs import ValidationSummary

CAMVID = REPO.parent / "shared" / "data" / "camvid"  # the default of every --camvid
CAMVID_DIRS = ("train", "trainannot", "val", "valannot")  # what the folder source's camvid preset reads
INPUT_SIZE = (256, 320)  # (H, W) the benchmarks train and time at: multiples of 32, near CamVid's 360x480 frames


def absolute(value: str) -> Path:
    """A path argument made absolute as given: the benchmarks run in a temporary working directory, so a relative
    ``--json`` or ``--camvid`` would otherwise be read or written there (and a 40-minute report lost)."""
    return Path(value).absolute()


def add_camvid_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--camvid",
        type=absolute,
        default=CAMVID,
        help=f"CamVid folder ({' '.join(d + '/' for d in CAMVID_DIRS)}); default ../shared/data/camvid beside "
        "the repository",
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=absolute, help="also write the figures here")


def add_camvid_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the benchmarks that train on CamVid through the pipeline."""
    add_camvid_option(parser)
    parser.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        default=INPUT_SIZE,
        metavar=("H", "W"),
        help="training input size, multiples of 32 (val is scored at each mask's own size)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--encoder", default="resnet18")
    add_json_option(parser)


def camvid_missing(root: Path) -> str | None:
    """None where ``root`` holds CamVid's folders, else what to tell the user: where we looked and how to point
    the benchmark elsewhere."""
    absent = [d for d in CAMVID_DIRS if not (root / d).is_dir()]
    if not absent:
        return None
    expected = " ".join(d + "/" for d in CAMVID_DIRS)
    return (
        f"CamVid not found at {root} (expected {expected} there, missing {' '.join(absent)}); "
        "from a clone elsewhere pass --camvid /path/to/camvid"
    )


def camvid_found(args: argparse.Namespace) -> bool:
    """True where ``args.camvid`` holds CamVid; else says why on stderr."""
    problem = camvid_missing(args.camvid)
    if problem:
        print(problem, file=sys.stderr)
    return problem is None


def camvid_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Params overrides (dotted keys) for the folder source with the CamVid preset and the common options."""
    return {
        "data.source": "folder",
        "data.root": str(args.camvid.resolve()),
        "data.preset": "camvid",
        "model.encoder": args.encoder,
        "train.batch_size": args.batch_size,
        "train.lr": args.lr,
        "train.input": {"size": list(args.input_size), "policy": "resize"},  # hand-set: every planned key pinned
        "train.rare_crops": 0.333,  # unused without crops
        "train.augment": {"hflip": 0.5},  # left-right flips: the policy these benchmarks were tuned with
    }


def load_params(overrides: dict[str, Any]) -> Config:
    """The repository's params.yaml with a benchmark's overrides (dotted keys)."""
    from visionflow.config import load_config

    return load_config(REPO / "params.yaml", overrides)


def prepare_and_validate(config: Config) -> tuple[ValidationSummary, float]:
    """The data stages every training benchmark runs first, and the seconds they took together."""
    from visionflow.stages import prepare, validate

    start = time.perf_counter()
    prepare.run(config)
    summary = validate.run(config)
    return summary, time.perf_counter() - start


def training_seconds(config: Config) -> float:
    """Wall time of the training that wrote ``config.paths.history``: every epoch's training and val passes."""
    import pandas as pd

    history = pd.read_csv(config.paths.history)
    return float(history["train_seconds"].sum() + history["val_seconds"].sum())


def per_image(config: Config) -> dict[str, dict[str, float | None]]:
    """Each val image's scores from evaluate's per_image.csv, by image id: what two runs are compared by."""
    import pandas as pd

    table = pd.read_csv(config.paths.evaluated("val").per_image, dtype={"id": str}).set_index("id")
    return {i: {k: score(v) for k, v in row.items()} for i, row in table[["miou", "pixel_accuracy"]].iterrows()}


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options as JSON-friendly values, paths relative to the repository (the report records what was run)."""
    return {k: os.path.relpath(v, REPO) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"}


def score(value: float | None) -> float | None:
    """A score as reported: four decimals; an undefined one (None or NaN: a class absent from val) as None."""
    return None if value is None or math.isnan(value) else round(float(value), 4)


def per_class_iou(metrics: dict[str, float | None]) -> dict[str, float | None]:
    return {k.removeprefix("iou_"): score(v) for k, v in metrics.items() if k.startswith("iou_")}


def write_json(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
