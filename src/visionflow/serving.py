"""The served model: ``model.pt`` (weights and the metadata train wrote beside them) as an MLflow pyfunc that
needs no repository.

:class:`Predictor` turns uint8 images into masks (segmentation) or labels and probabilities (classification),
applying what training decided and stored in :class:`~visionflow.handoffs.ModelMeta`: the input size and policy,
the normalisation, the class names and, for binary segmentation, the threshold. The pyfunc, ``visionflow
predict``, the promotion gate and the predict benchmark all run this one class. Its imports are the model
libraries and visionflow's model factory, transforms and runtime, which the logged model packs (``code_paths``).
Versions registered before the metadata carried the preprocessing (schema 1, with a ``preprocessing.json``
artifact) still load: :func:`legacy_meta` reads the two together.

Input (pyfunc): a DataFrame with an ``image`` column whose cells are base64-encoded PNG/JPEG strings or uint8
arrays (H, W, 3); or a list of either. Over HTTP: ``{"dataframe_split": {"columns": ["image"], "data":
[["<base64>"]]}}``. Output: a DataFrame, one row per image: ``mask`` (base64 PNG of class ids), ``height``,
``width`` for segmentation; ``label``, ``label_id``, ``probability``, ``probabilities`` for classification.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from visionflow.data.dataset import decode_rgb
from visionflow.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    apply_policy,
    decide,
    pad_collate,
    restore_decide,
    size_groups,
)
from visionflow.engine import windowed
from visionflow.errors import InputError
from visionflow.handoffs import ModelMeta
from visionflow.inference import Inference
from visionflow.windows import Windows

__all__ = [
    "Predictor",
    "VisionflowPyfunc",
    "decode_image",
    "decode_mask",
    "encode_mask",
    "legacy_meta",
    "to_frame",
]


def legacy_meta(meta: Mapping[str, Any], preprocessing: Mapping[str, Any]) -> ModelMeta:
    """A schema-1 model (metadata without preprocessing, a ``preprocessing.json`` beside it) as a :class:`ModelMeta`;
    such models were normalised with the ImageNet statistics, which were then fixed."""
    metric = next((k for k in meta if k.startswith("val_")), "")
    return ModelMeta(
        task=str(meta.get("task", "segmentation")),
        arch=str(meta["arch"]),
        encoder=str(meta["encoder"]),
        classes=tuple(meta["classes"]),
        ignore_index=int(meta["ignore_index"]),
        input_size=None if preprocessing.get("size") is None else tuple(preprocessing["size"]),
        input_policy=str(preprocessing["policy"]),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        threshold=preprocessing.get("threshold"),
        epoch=int(meta.get("epoch", 0)),
        metric=metric,
        score=None if not metric else float(meta[metric]),
    )


def decode_image(value: Any, where: str = "image") -> np.ndarray:
    """A base64 PNG/JPEG string (or bytes) or an array -> (H, W, 3) uint8 RGB; errors say which input and why."""
    if isinstance(value, str | bytes):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError(f"{where}: not valid base64 ({exc})") from None
        try:
            return decode_rgb(raw)
        except Exception as exc:  # any decoder failure: say what it was
            raise InputError(f"{where}: not a decodable PNG/JPEG image ({exc})") from None
    array = np.asarray(value)
    if array.dtype == object:  # nested lists that came through JSON
        array = np.array(array.tolist())
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise InputError(f"{where}: expected an (H, W, 3) image array, got shape {array.shape}")
    if array.min(initial=0) < 0 or array.max(initial=0) > 255:
        raise InputError(f"{where}: pixel values outside 0-255")
    return np.ascontiguousarray(array[..., :3].astype(np.uint8))


def encode_mask(mask: np.ndarray) -> str:
    """Class-id mask -> base64 PNG (lossless, 8-bit grey)."""
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8), "L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_mask(text: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(text))) as image:
        return np.array(image)


class Predictor:
    """A model and its :class:`ModelMeta`: uint8 images in, masks or class probabilities out.

    Where the forward runs is this machine's choice, not the model's: the device, the memory layout, and bf16
    autocast where the hardware has it (``precision: auto``), else fp32.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        meta: ModelMeta,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        channels_last: bool = True,
    ) -> None:
        self.meta = meta
        self.inference = Inference.of(meta)
        self.runtime = self.inference.runtime(device, channels_last, precision)
        self.model = self.runtime.prepare(model).eval()

    @classmethod
    def from_file(cls, weights: str | Path, **runtime: Any) -> Predictor:
        """A ``model.pt`` written by train (schema 2: the preprocessing travels inside it)."""
        from visionflow.models import load_model

        model, meta = load_model(Path(weights))
        return cls(model, meta, **runtime)

    @classmethod
    def from_artifacts(cls, artifacts: Mapping[str, str], **runtime: Any) -> Predictor:
        """The pyfunc's artifacts: ``weights`` alone, or, for a version registered before the preprocessing
        travelled in ``model.pt``, ``weights`` plus ``preprocessing`` (its preprocessing.json)."""
        if "preprocessing" not in artifacts:
            return cls.from_file(artifacts["weights"], **runtime)
        from visionflow.models import build_model

        saved = torch.load(artifacts["weights"], map_location="cpu", weights_only=True)
        meta = legacy_meta(saved["meta"], json.loads(Path(artifacts["preprocessing"]).read_text(encoding="utf-8")))
        model = build_model(meta)
        model.load_state_dict(saved["state_dict"])
        return cls(model.eval(), meta, **runtime)

    def _inputs(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        items = []
        for image in images:
            tensor = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))  # memmaps are read-only
            spec = self.inference.input
            moved, _ = apply_policy(tensor, None, spec.policy, spec.size, self.meta.ignore_index)
            sizes = torch.tensor([moved.shape[0], moved.shape[1], tensor.shape[0], tensor.shape[1]])
            items.append((moved, torch.zeros(()), sizes))
        batch, _, sizes = pad_collate(items, self.meta.ignore_index)
        return batch, sizes

    @torch.inference_mode()
    def logits(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, h, w) or (N, C) logits of one batch, as the model returns them (bf16 under bf16 autocast), and
        the (input, original) sizes."""
        batch, sizes = self._inputs(images)
        with self.runtime.autocast():
            return self.model(self.runtime.images(batch)), sizes

    @torch.inference_mode()
    def _windowed(self, images: Sequence[np.ndarray], windows: Windows) -> list[np.ndarray]:
        out = []
        for image in images:
            tensor = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
            logits = windowed(self.model, self.runtime, tensor, windows)
            out.append(decide(logits[None], self.inference.threshold)[0].to(torch.uint8).cpu().numpy())
        return out

    def predict(self, images: Sequence[np.ndarray], batch_size: int = 16) -> list[np.ndarray]:
        """Per image: a uint8 (H, W) class-id mask at the image's own size, or a vector of class probabilities.
        A model of the window policy scores each image by overlapping windows (``batch_size`` does not apply)."""
        inference = self.inference
        if inference.windows is not None:
            return self._windowed(images, inference.windows)
        out: list[np.ndarray] = []
        for start in range(0, len(images), batch_size):
            logits, sizes = self.logits(images[start : start + batch_size])
            if inference.task == "classification":
                out.extend(logits.float().softmax(dim=1).cpu().numpy())
                continue
            for a, b, key in size_groups(sizes):
                decided = restore_decide(logits[a:b], key, inference.policy, inference.threshold)
                out.extend(decided.to(torch.uint8).cpu().numpy())
        return out


def to_frame(meta: ModelMeta, outputs: Iterable[np.ndarray]) -> pd.DataFrame:
    """The pyfunc's answer: masks as base64 PNG, or labels with probabilities."""
    rows = []
    for output in outputs:
        if meta.task == "classification":
            best = int(np.argmax(output))
            rows.append(
                {
                    "label": meta.classes[best],
                    "label_id": best,
                    "probability": float(output[best]),
                    "probabilities": [round(float(p), 6) for p in output],
                }
            )
        else:
            rows.append({"mask": encode_mask(output), "height": output.shape[0], "width": output.shape[1]})
    return pd.DataFrame(rows)


def _images_from(model_input: Any) -> list[np.ndarray]:
    if isinstance(model_input, pd.DataFrame):
        if "image" not in model_input.columns:
            raise InputError(f"expected a column 'image'; got columns {list(model_input.columns)}")
        values = model_input["image"].tolist()
    elif isinstance(model_input, dict):
        values = list(model_input["image"])
    elif isinstance(model_input, np.ndarray) and model_input.ndim == 4:
        values = list(model_input)
    else:
        values = list(model_input)
    return [decode_image(v, where=f"image {i}") for i, v in enumerate(values)]


try:  # the pyfunc wrapper; the rest of this module works without MLflow
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - MLflow is a dependency of the project
    PythonModel = object  # type: ignore[assignment,misc]


class VisionflowPyfunc(PythonModel):  # type: ignore[misc,valid-type]
    """MLflow pyfunc: artifact ``weights`` (model.pt, its metadata inside); older versions also ``preprocessing``."""

    def load_context(self, context: Any) -> None:
        self.predictor = Predictor.from_artifacts(context.artifacts)

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would read them as a schema
        """A DataFrame (or list) of base64 strings / uint8 arrays in, one result row per image out."""
        images = _images_from(model_input)
        return to_frame(self.predictor.meta, self.predictor.predict(images))
