"""The machine's side of the plan: what kind of machine this is, and how fast it trains and scores the planned model
at candidate input sizes and batches (:class:`~visionflow.planning.rules.Machine`).

The kind names what the speed depends on (CPU model, cores, bf16 support; or the accelerator and its memory), so
a profile measured once can be kept per kind and reused: the plan then changes when the machine kind does, not
when this machine happens to be busier. Speeds are measured on random images of each size, through the same
``train_one_epoch`` and forward pass that training and evaluation run, after one warm-up batch.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from visionflow.config import ModelConfig, TrainConfig
from visionflow.engine import Runtime, WeightAverage, cpu_cores, cpu_has_bf16, create_optimizer, train_one_epoch
from visionflow.losses import create_loss
from visionflow.models import create_model, output_channels
from visionflow.planning.rules import Machine, Rate

__all__ = ["machine_kind", "measure"]


PROBE_IGNORE = 255  # the probe's targets hold no ignored pixel; the loss still looks for them, as training's does


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="ignore").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_kind(device: torch.device, precision: str) -> str:
    """A short text naming what the speed depends on, e.g. ``cpu: Intel Xeon Processor, 2 cores, bf16``."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"cuda: {props.name}, {props.total_memory / 2**30:.0f} GiB, {precision}"
    bf16 = "bf16 units" if cpu_has_bf16() else "no bf16 units"
    return f"cpu: {_cpu_name()}, {cpu_cores()} cores, {bf16}, {precision}"


def _batches(
    height: int, width: int, batch: int, count: int, classes: int, seed: int
) -> list[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        images = torch.randint(0, 256, (batch, height, width, 3), dtype=torch.uint8, generator=generator)
        targets = torch.randint(0, classes, (batch, height, width), generator=generator)
        sizes = torch.tensor([[height, width, height, width]] * batch)
        out.append((images, targets, sizes))
    return out


@torch.inference_mode()
def _eval_rate(model: nn.Module, runtime: Runtime, batches: Sequence[tuple[torch.Tensor, ...]]) -> float:
    model.eval()
    with runtime.autocast():
        model(runtime.images(batches[0][0]))  # warm-up
    start, seen = time.perf_counter(), 0
    for images, _, _ in batches[1:]:
        with runtime.autocast():
            model(runtime.images(images)).float()
        seen += len(images)
    return seen / max(time.perf_counter() - start, 1e-9)


def measure(
    model_config: ModelConfig,
    task: str,
    num_classes: int,
    runtime: Runtime,
    sizes: Sequence[Sequence[int]],
    batches: Sequence[int],
    steps: int = 2,
    kind: str = "",
    train: TrainConfig | None = None,
) -> Machine:
    """Train and eval images per second of the model at each (size, batch): ``steps`` timed batches after one
    warm-up batch, each step as training takes it (``train``'s loss terms, gradient clipping and weight average; a
    step's fixed costs, the optimiser's, the clipping's and the average's, weigh twice as much an image at half the
    batch). Segmentation only (classification plans no input size)."""
    train = train or TrainConfig()
    channels = output_channels(task, num_classes)
    rates = []
    for height, width in ((int(s[0]), int(s[1])) for s in sizes):
        for batch in batches:
            torch.manual_seed(0)
            model = runtime.prepare(create_model(model_config, task, num_classes))
            optimizer = create_optimizer(model, lr=1e-3)
            loss = create_loss(train.loss, None, PROBE_IGNORE, train.focal_gamma)
            average = None if train.ema_decay is None else WeightAverage(model, train.ema_decay)
            after = None if average is None else lambda: average.update(model)  # noqa: B023 - called in this loop
            data = _batches(height, width, batch, steps + 1, max(2, channels), seed=height * 7 + batch)
            for desc, timed in (("warm-up", data[:1]), (f"speed {height}x{width}/{batch}", data[1:])):
                fit = train_one_epoch(model, timed, loss, optimizer, runtime, desc=desc, grad_clip=train.grad_clip,
                                      after_step=after)  # fmt: skip
            rates.append(Rate(height, width, batch, fit["images_per_second"], _eval_rate(model, runtime, data)))
    return Machine(kind or machine_kind(runtime.device, runtime.precision), tuple(rates))
