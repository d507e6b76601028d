"""The one inference path: how an image reaches a trained model and how its output comes back, as the model's
:class:`~visionflow.handoffs.ModelMeta` says.

:meth:`Inference.of` reads one from a model's metadata; train's val pass, evaluate, ``visionflow predict``, the
promotion gate and the served pyfunc all score through it, so the input size and policy, the scale, the windows,
flip test-time augmentation, the threshold and the normalisation are read from the metadata in this one place and
never re-expanded field by field.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from visionflow.config import InputConfig
from visionflow.engine import Batch, EvalResult, OnBatch, Runtime, evaluate, resolve_precision
from visionflow.handoffs import ModelMeta
from visionflow.windows import Windows

__all__ = ["Inference"]

DEFAULT_THRESHOLD = 0.5  # binary segmentation without a threshold chosen on val: sigmoid > 0.5


@dataclass(frozen=True)
class Inference:
    """How one model is fed and read: the preprocessing training decided, stored in its metadata."""

    task: str  # segmentation | classification
    input: InputConfig  # size, policy (resize | pad | window) and scale: how an image reaches the model
    windows: Windows | None  # the window policy's overlapping windows (a model trained on crops); else None
    threshold: float  # binary segmentation: sigmoid > threshold is foreground
    mean: tuple[float, float, float]  # per-channel normalisation of [0, 1] RGB
    std: tuple[float, float, float]

    @classmethod
    def of(cls, meta: ModelMeta) -> Inference:
        spec = InputConfig(size=meta.input_size, policy=meta.input_policy, scale=meta.scale)  # type: ignore[arg-type]
        return cls(
            task=meta.task,
            input=spec,
            windows=Windows.of(spec.policy, spec.size, meta.overlap, meta.flip, spec.scale),
            threshold=DEFAULT_THRESHOLD if meta.threshold is None else float(meta.threshold),
            mean=tuple(meta.mean),  # type: ignore[arg-type]
            std=tuple(meta.std),  # type: ignore[arg-type]
        )

    @property
    def policy(self) -> str:
        return self.input.policy

    def runtime(self, device: str | torch.device, channels_last: bool = True, precision: str = "auto") -> Runtime:
        """Where the forward runs (this machine's choice: device, layout, bf16 where the hardware has it) with this
        model's normalisation."""
        device = torch.device(device)
        return Runtime(device, channels_last, resolve_precision(precision, device), self.mean, self.std)

    def evaluate(
        self,
        model: nn.Module,
        loader: Iterable[Batch],
        runtime: Runtime,
        num_classes: int,
        ignore_index: int,
        loss_fn: nn.Module | None = None,
        on_batch: OnBatch | None = None,
    ) -> EvalResult:
        """:func:`visionflow.engine.evaluate` over ``loader`` (items at :attr:`input`, original masks as targets)
        with this model's policy, windows and threshold."""
        return evaluate(
            model,
            loader,
            loss_fn,
            num_classes,
            ignore_index,
            runtime,
            self.policy,
            self.threshold,
            on_batch=on_batch,
            windows=self.windows,
        )
