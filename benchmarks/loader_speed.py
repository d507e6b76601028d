"""Loader throughput: training items per second from the decoded cache, through the input policy and the
augmentation, batched as training batches them, against the model's own training speed at that size.

    python benchmarks/loader_speed.py                       # CamVid: whole frames padded, and crops; three policies
    python benchmarks/loader_speed.py --policies off hflip  # the policies an older commit also has (compare commits)

Training loads in its own process between steps, so every millisecond here adds to an epoch. Each row reads
CamVid's train split (367 frames) ``--epochs`` times through ``visionflow.data.loading.make_dataset`` (what train
builds) and a loader of batch ``--batch-size``: ``pad`` (whole 360x480 frames padded to 384x480: the 40-minute plan
on a bf16 CPU) and ``crop`` (128x192 crops of the frames shrunk to 0.71, a third centred on a rare class: the
planner's crops path). Policies: ``off`` (no augmentation), ``hflip`` (left-right flips only: the default before
the augmentation was planned), ``auto`` (what the planner chooses for CamVid: nnU-Net's set, upright). The cache
is built before timing. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import _camvid as common

from visionflow.planning.rules import GEOMETRY, PHOTOMETRIC, TILT

POLICIES: dict[str, dict[str, Any]] = {
    "off": {"hflip": 0.0},
    "hflip": {"hflip": 0.5},
    # rule 6 for CamVid (sky and road keep to a side of the height): visionflow.planning.rules.augment_policy
    "auto": {"hflip": 0.5, "vflip": 0.0, "rotate": TILT, **GEOMETRY, **PHOTOMETRIC},
}
INPUTS: dict[str, dict[str, Any]] = {
    "pad": {"size": [384, 480], "policy": "pad"},
    "crop": {"size": [128, 192], "policy": "crop", "scale": 0.7071},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=list(INPUTS))
    parser.add_argument("--epochs", type=int, default=3, help="passes over the train split per row (median)")
    parser.add_argument("--batch-size", type=int, default=4)
    common.add_camvid_option(parser)
    common.add_json_option(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if not common.camvid_found(args):
        return 1
    from visionflow.config import InputConfig
    from visionflow.data.loading import make_dataset, make_loader
    from visionflow.handoffs import AcceptedManifest, ClassWeights, DatasetInfo
    from visionflow.stages import balance

    rows_out = []
    with tempfile.TemporaryDirectory(prefix="visionflow-loader-") as scratch:
        os.chdir(scratch)
        base = {"data.source": "folder", "data.root": str(args.camvid.resolve()), "data.preset": "camvid",
                "train.rare_crops": 0.333}  # fmt: skip
        config = common.load_params(base)
        common.prepare_and_validate(config)
        info, manifest = DatasetInfo.read(config.paths), AcceptedManifest.read(config.paths)
        rows = manifest.split("train")
        balance.run(config)
        rare = ClassWeights.read(config.paths).rare_ids()  # as train passes them: the crops path's rare classes
        for input_name in args.inputs:
            spec = InputConfig.model_validate(INPUTS[input_name])
            for policy_name in args.policies:
                trial = common.load_params(base | {"train.augment": POLICIES[policy_name]})
                dataset = make_dataset(trial, info, rows, spec, train=True, rare=rare)
                loader = make_loader(dataset, args.batch_size)
                times = []
                for epoch in range(args.epochs + 1):  # the first pass builds the cache and warms up
                    dataset.set_epoch(epoch)
                    start = time.perf_counter()
                    for _ in loader:
                        pass
                    if epoch:
                        times.append(time.perf_counter() - start)
                seconds = statistics.median(times)
                rows_out.append({"input": input_name, "policy": policy_name, "images": len(dataset),
                                 "seconds": round(seconds, 3), "images_per_second": round(len(dataset) / seconds, 1),
                                 "ms_per_image": round(1000 * seconds / len(dataset), 2)})  # fmt: skip
                print(f"{input_name:5s} {policy_name:6s} {rows_out[-1]['images_per_second']:8.1f} img/s "
                      f"{rows_out[-1]['ms_per_image']:6.2f} ms/img", flush=True)  # fmt: skip
    report = {"settings": {**common.settings(args), "batch_size": args.batch_size, "epochs": args.epochs},
              "rows": rows_out}  # fmt: skip
    common.write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
