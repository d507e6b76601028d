"""Training and inference throughput: a plain PyTorch + smp loop against visionflow's step, same model and data.

    python benchmarks/train_speed.py                      # Unet-resnet18, 256x320, batch 8
    python benchmarks/train_speed.py --compile --json speed.json

(a) "plain": the loop smp's own examples teach: fp32, NCHW float input, ``model(x)``, Adam, cross-entropy;
inference under ``torch.no_grad``. (b) "visionflow": the engine's ``train_one_epoch`` / ``predict_logits`` with
uint8 input normalised on the fly, channels_last, and each precision asked for (fp32 and bf16 autocast by
default), inference under ``torch.inference_mode``. Every variant runs on the same batches in one process; the
table gives img/s and the ratio to the plain loop. ``--compile`` adds visionflow with ``torch.compile``.
A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import segmentation_models_pytorch as smp
import torch
from _camvid import INPUT_SIZE, add_json_option, settings, write_json

from visionflow.config import ModelConfig
from visionflow.data.transforms import normalise
from visionflow.engine import Runtime, create_optimizer, predict_logits, train_one_epoch
from visionflow.losses import create_loss
from visionflow.models import create_segmenter


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="Unet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--size", type=int, nargs=2, default=INPUT_SIZE, metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant (after 2 warm-up steps)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--compile", action="store_true", help="also time visionflow with torch.compile")
    add_json_option(parser)
    return parser.parse_args()


def batches(args: argparse.Namespace) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    height, width = args.size
    return [
        (torch.randint(0, 256, (args.batch_size, height, width, 3), dtype=torch.uint8, generator=generator),
         torch.randint(0, args.classes, (args.batch_size, height, width), generator=generator))
        for _ in range(args.steps + 2)
    ]  # fmt: skip


def fresh_model(args: argparse.Namespace) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_segmenter(ModelConfig(arch=args.arch, encoder=args.encoder), args.classes)


def timed(step: Any, data: list[Any]) -> float:
    """img/s over ``data`` after the first two batches (warm-up, lazy initialisation)."""
    for batch in data[:2]:
        step(batch)
    start = time.perf_counter()
    for batch in data[2:]:
        step(batch)
    return sum(len(b[0]) for b in data[2:]) / (time.perf_counter() - start)


def plain(args: argparse.Namespace, data: list[Any]) -> dict[str, float]:
    model = smp.create_model(args.arch, encoder_name=args.encoder, encoder_weights=None, classes=args.classes)
    model.load_state_dict(fresh_model(args).state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    floats = [(normalise(x).contiguous(), y) for x, y in data]  # the plain loop gets float NCHW input for free

    def train_step(batch: Any) -> None:
        x, y = batch
        model.train()
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    def infer_step(batch: Any) -> None:
        model.eval()
        with torch.no_grad():
            model(batch[0]).argmax(1)

    return {"train": timed(train_step, floats), "inference": timed(infer_step, floats)}


def visionflow(args: argparse.Namespace, data: list[Any], precision: str, compile_model: bool) -> dict[str, float]:
    runtime = Runtime(torch.device("cpu"), channels_last=True, precision=precision)
    model = runtime.prepare(fresh_model(args))
    if compile_model:
        model = torch.compile(model)
    loss_fn = create_loss({"ce": 1.0}, None, ignore_index=255)
    optimizer = create_optimizer(model, lr=1e-3)  # as train makes it (fused AdamW)

    def train_step(batch: Any) -> None:
        images, masks = batch
        train_one_epoch(model, [(images, masks, None)], loss_fn, optimizer, runtime, desc="bench")  # sizes: eval only

    def infer_step(batch: Any) -> None:
        predict_logits(model, batch[0], runtime).argmax(1)

    return {"train": timed(train_step, data), "inference": timed(infer_step, data)}


def main() -> int:
    args = parse_args()
    data = batches(args)
    results: dict[str, dict[str, float]] = {"plain fp32": plain(args, data)}
    for precision in args.precisions:
        results[f"visionflow {precision}"] = visionflow(args, data, precision, compile_model=False)
    if args.compile:
        for precision in args.precisions:
            results[f"visionflow {precision} compiled"] = visionflow(args, data, precision, compile_model=True)
    base = results["plain fp32"]
    print(f"\n{args.arch}-{args.encoder}, {args.size[0]}x{args.size[1]}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")  # fmt: skip
    print("| variant | train img/s | ratio | inference img/s | ratio |\n|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['train']:.2f} | {r['train'] / base['train']:.2f} | {r['inference']:.2f} | "
              f"{r['inference'] / base['inference']:.2f} |")  # fmt: skip
    write_json(args.json, {"settings": settings(args), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
