"""`visionflow predict` against a bare forward pass of the same model on the same images.

    python benchmarks/predict_speed.py --json predict.json

(a) bare forward: the model alone on already resized, normalised float batches (channels_last, the same
    precision), ``model(batch).argmax(1)`` under ``torch.inference_mode`` with torch's threads; also a plain fp32,
    default-layout forward for reference;
(a') the same forward passes scheduled as `visionflow predict` schedules its batches (``--streams`` threads, the
    same batch spans, torch's threads divided among them): what the forward alone gains from that schedule;
(b) Predictor: uint8 images in memory -> masks at their original size (resize, normalise, forward, restore,
    argmax): what the pyfunc and the promotion gate run;
(c) `visionflow predict` end to end: PNG files in a folder -> mask PNGs and overlay JPEGs written.
Images are CamVid's val frames (360x480) when ``--camvid`` holds CamVid (default ``../shared/data/camvid``
beside the repository; from a clone elsewhere pass ``--camvid /path/to/camvid``), else random images of that
size; either way they are brought to 256x320 (``--size``). The model is a fresh (untrained) Unet-resnet18 with
CamVid's 11 classes. Prints img/s of each and the ratios to (a) and to (a').
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _camvid import INPUT_SIZE, add_camvid_option, add_json_option, camvid_missing, settings, write_json
from PIL import Image

from visionflow.config import ModelConfig
from visionflow.data.sources import PRESETS
from visionflow.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalise
from visionflow.engine import cpu_has_bf16
from visionflow.handoffs import ModelMeta
from visionflow.models import create_segmenter
from visionflow.predict import default_streams, in_streams, predict_folder, spans
from visionflow.serving import Predictor

FRAME = (360, 480)  # (H, W) of CamVid's frames: the size of the random stand-ins


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_camvid_option(parser)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, nargs=2, default=INPUT_SIZE, metavar=("H", "W"))
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16" if cpu_has_bf16() else "fp32")
    parser.add_argument("--streams", type=int, default=default_streams(torch.device("cpu")))
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best is reported")
    add_json_option(parser)
    return parser.parse_args()


def load_images(args: argparse.Namespace) -> tuple[list[np.ndarray], str]:
    """Up to ``--images`` of CamVid's val frames, or as many random images of their size; and which it was."""
    problem = camvid_missing(args.camvid)
    if problem is None:
        files = sorted((args.camvid / "val").glob("*.png"))[: args.images]
        return [np.array(Image.open(f).convert("RGB")) for f in files], f"CamVid val ({args.camvid})"
    print(f"{problem}; timing random {FRAME[0]}x{FRAME[1]} images instead", file=sys.stderr)
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (*FRAME, 3), dtype=np.uint8) for _ in range(args.images)], "random"


def fresh_predictor(args: argparse.Namespace) -> Predictor:
    """An untrained Unet-resnet18 for CamVid's classes, with the metadata train would give it at ``--size``."""
    camvid = PRESETS["camvid"]
    torch.manual_seed(0)
    model = create_segmenter(ModelConfig(arch="Unet", encoder="resnet18"), len(camvid.classes))
    meta = ModelMeta(task="segmentation", arch="Unet", encoder="resnet18", classes=camvid.classes,
                     ignore_index=camvid.ignore_index, input_size=tuple(args.size), input_policy="resize",
                     mean=IMAGENET_MEAN, std=IMAGENET_STD)  # fmt: skip
    return Predictor(model, meta, precision=args.precision)


def best_rate(run: Callable[[], object], images: int, repeats: int) -> float:
    run()  # warm-up: lazy initialisation, oneDNN kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return images / min(times)


def main() -> int:
    args = parse_args()
    images, source = load_images(args)
    predictor = fresh_predictor(args)

    batches = []
    for start in range(0, len(images), args.batch_size):
        batch, _ = predictor._inputs(images[start : start + args.batch_size])
        batches.append(normalise(batch).contiguous(memory_format=torch.channels_last))

    @torch.inference_mode()
    def forward(x: torch.Tensor) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            predictor.model(x).argmax(1)

    def bare() -> None:
        for x in batches:
            forward(x)

    every = torch.cat(batches)
    schedule = spans(len(images), args.batch_size, args.streams)

    def scheduled() -> None:
        in_streams(lambda start, stop: forward(every[start:stop]), schedule, args.streams, torch.device("cpu"))

    plain_batches = [x.contiguous() for x in batches]

    @torch.inference_mode()
    def plain() -> None:  # what a user writes without visionflow: fp32, default memory layout
        model = predictor.model.to(memory_format=torch.contiguous_format)
        for x in plain_batches:
            model(x).argmax(1)
        predictor.model.to(memory_format=torch.channels_last)

    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp) / "in", Path(tmp) / "out"
        folder.mkdir()
        for i, image in enumerate(images):
            Image.fromarray(image).save(folder / f"{i:04d}.png")
        rates = {
            "bare forward": best_rate(bare, len(images), args.repeats),
            "bare forward, scheduled as predict": best_rate(scheduled, len(images), args.repeats),
            "plain fp32 forward": best_rate(plain, len(images), args.repeats),
            "Predictor (in memory)": best_rate(lambda: predictor.predict(images, args.batch_size), len(images),
                                               args.repeats),
            "visionflow predict (files)": best_rate(lambda: predict_folder(predictor, folder, out, args.batch_size,
                                                                          args.streams),
                                                    len(images), args.repeats),
        }  # fmt: skip
    base, same = rates["bare forward"], rates["bare forward, scheduled as predict"]
    shape = f"{images[0].shape[0]}x{images[0].shape[1]} -> {args.size[0]}x{args.size[1]}"
    threads = torch.get_num_threads()
    print(
        f"\nUnet-resnet18, {len(images)} images {shape}, batch {args.batch_size}, {args.precision}, {threads} threads,"
        f" predict in {args.streams} streams ({' '.join(str(b - a) for a, b in schedule)} images per batch)"
    )
    print("| path | img/s | ratio to bare forward | ratio to the forward scheduled as predict |\n|---|---:|---:|---:|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.2f} | {rate / base:.2f} | {rate / same:.2f} |")
    write_json(args.json, {
        "settings": settings(args),
        "inputs": {"images": len(images), "height": images[0].shape[0], "width": images[0].shape[1], "source": source},
        "images_per_second": rates,
        "ratios": {k: v / base for k, v in rates.items()},
        "ratios_to_scheduled_forward": {k: v / same for k, v in rates.items()},
    })  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
