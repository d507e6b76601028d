"""Training and evaluation loops for both tasks. No files, no tracking: modules and loaders in, numbers out.

Batches are (uint8 images (N, H, W, 3), targets, sizes) from :class:`visionflow.data.dataset.ImageDataset`.
Segmentation logits are mapped back to each mask's original resolution before they are scored.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.utils import ModelEmaV3
from torch import nn
from tqdm import tqdm

from visionflow.data.transforms import IMAGENET_MEAN, IMAGENET_STD, decide, normalise, restore_groups
from visionflow.errors import ConfigError
from visionflow.metrics import confusion_matrix
from visionflow.windows import Windows

__all__ = [
    "EvalResult",
    "Runtime",
    "WeightAverage",
    "cpu_cores",
    "cpu_has_bf16",
    "create_optimizer",
    "decide",
    "evaluate",
    "predict_logits",
    "resolve_device",
    "resolve_precision",
    "train_one_epoch",
    "windowed",
]

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images, targets, sizes
# Called with the predictions, targets and float logits of each image of a batch (original resolution).
OnBatch = Callable[[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]], None]


@dataclass(frozen=True)
class Runtime:
    """Where and how tensors run."""

    device: torch.device
    channels_last: bool = False
    precision: str = "fp32"  # fp32 | bf16 (autocast; the loss is still computed in fp32)
    mean: tuple[float, float, float] = IMAGENET_MEAN  # the model's input normalisation (ModelMeta carries it)
    std: tuple[float, float, float] = IMAGENET_STD

    def autocast(self) -> torch.autocast:
        """Mixed precision for the forward pass where asked for; a no-op context for fp32."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def images(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC batch -> normalised float NCHW on the device, in the chosen memory layout."""
        x = normalise(batch.to(self.device, non_blocking=True), self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model


@dataclass(frozen=True)
class EvalResult:
    loss: float  # mean over images
    confusion: torch.Tensor  # (K, K), rows = truth
    images_per_second: float
    images: int = 0


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 matrix units (AMX or AVX512-BF16), where bf16 autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="ignore")
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` -> bf16 where the hardware runs it natively (it measured 2.7x faster training and 3.4x faster
    inference here, with val mIoU within 0.01 of fp32), else fp32."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


FUSED_DEVICES = ("cpu", "cuda")  # where torch's AdamW has a fused kernel


def create_optimizer(model: nn.Module, lr: float, weight_decay: float = 1e-2) -> torch.optim.Optimizer:
    """AdamW over the model's parameters, fused where torch has the kernel for their device: one pass over every
    tensor instead of a dozen small operations per tensor (Unet-resnet18 on a 2-core Xeon: 11.5 ms a step against
    57 ms, a tenth of a 64x64 batch of 8's step; the same updates to within float32 rounding)."""
    device = next(model.parameters()).device.type
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=device in FUSED_DEVICES)


class WeightAverage:
    """An exponential moving average of the weights and buffers (timm's ``ModelEmaV3``), updated after every
    optimiser step. Its decay warms up as ``1 - (1 + step) ** -0.75`` towards ``decay`` (timm's setting for runs of
    thousands of steps rather than millions), so a short run averages over its last epochs, not its random start."""

    WARMUP_POWER = 0.75

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.average = ModelEmaV3(model, decay=decay, use_warmup=True, warmup_power=self.WARMUP_POWER)
        self.steps = 0

    @property
    def module(self) -> torch.nn.Module:
        return self.average.module

    def update(self, model: torch.nn.Module) -> None:
        self.steps += 1
        self.average.update(model, step=self.steps)

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and the step count: the checkpoint restores the average bit for bit."""
        return {"weights": {k: v.detach().cpu() for k, v in self.module.state_dict().items()}, "steps": self.steps}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.module.load_state_dict(saved["weights"])
        self.steps = int(saved["steps"])


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[Batch],
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    runtime: Runtime,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    desc: str = "train",
    grad_clip: float | None = None,
    after_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """One pass over ``loader`` (``after_step`` runs after each optimiser step); returns the mean loss and the
    throughput."""
    model.train()
    total_loss, seen, start = 0.0, 0, time.perf_counter()
    bar = tqdm(loader, desc=desc, unit="batch", leave=False)
    for images, targets, _ in bar:
        x, y = runtime.images(images), targets.to(runtime.device, non_blocking=True)
        with runtime.autocast():
            logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step()
        total_loss += loss.item() * len(images)
        seen += len(images)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    elapsed = time.perf_counter() - start
    return {"loss": total_loss / max(seen, 1), "images_per_second": seen / elapsed if elapsed else 0.0}


def windowed(model: nn.Module, runtime: Runtime, image: torch.Tensor, windows: Windows) -> torch.Tensor:
    """(C, H, W) float logits of one uint8 (H, W, 3) image by overlapping, blended windows (on the device)."""

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with runtime.autocast():
            return model(runtime.images(batch))

    return windows.logits(forward, image)


def _at_original_size(
    logits: torch.Tensor | None, images: torch.Tensor, targets: torch.Tensor, sizes: torch.Tensor, policy: str,
    windows: Windows | None, scorer: Callable[[torch.Tensor], torch.Tensor],
) -> list[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """(logits, targets) groups at the original resolution: one group when the batch shares a size; one per image
    for windows, each image cut from the padded batch and scored window by window."""
    if windows is not None:
        groups = []
        for i, size in enumerate(sizes.tolist()):
            image = images[i, : size[0], : size[1]]
            groups.append((scorer(image)[None], targets[i : i + 1, : size[2], : size[3]]))
        return groups
    assert logits is not None
    if logits.ndim == 2:  # classification: nothing to map back
        return [(logits, targets)]
    return [
        (scored, targets[a:b, : size[2], : size[3]]) for a, b, size, scored in restore_groups(logits, sizes, policy)
    ]


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable[Batch],
    loss_fn: nn.Module | None,
    num_classes: int,
    ignore_index: int,
    runtime: Runtime,
    policy: str = "resize",
    threshold: float = 0.5,
    on_batch: OnBatch | None = None,
    windows: Windows | None = None,
) -> EvalResult:
    """Loss and confusion matrix over ``loader``, scored at each mask's original resolution (``policy`` says how
    to map logits back: ``resize`` interpolates, ``pad`` slices, ``window`` scores each image by ``windows``).
    ``on_batch`` sees every image's prediction."""
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    total_loss, seen, start = 0.0, 0, time.perf_counter()
    if (policy == "window") != (windows is not None):
        raise ValueError(f"input policy '{policy}' with windows {windows}: windows go with the window policy only")

    def scorer(image: torch.Tensor) -> torch.Tensor:
        assert windows is not None
        return windowed(model, runtime, image, windows)

    for images, targets, sizes in tqdm(loader, desc="eval", unit="batch", leave=False):
        logits = None
        if windows is None:
            with runtime.autocast():
                logits = model(runtime.images(images)).float()
        groups = _at_original_size(logits, images, targets.to(runtime.device), sizes, policy, windows, scorer)
        for scored, truth in groups:
            if loss_fn is not None:
                total_loss += loss_fn(scored, truth).item() * len(truth)
            pred = decide(scored, threshold)
            confusion += confusion_matrix(pred, truth, num_classes, ignore_index)
            if on_batch is not None:
                on_batch(list(pred.cpu()), list(truth.cpu()), list(scored.cpu()))
        seen += len(images)
    elapsed = time.perf_counter() - start
    return EvalResult(total_loss / max(seen, 1), confusion, seen / elapsed if elapsed else 0.0, seen)


@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    model.eval()
    with runtime.autocast():
        return model(runtime.images(images)).float().cpu()
