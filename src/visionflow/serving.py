"""The served model: weights plus their preprocessing, as an MLflow pyfunc that needs no repository.

:class:`Predictor` turns uint8 images into masks (segmentation) or labels and probabilities (classification),
applying what training decided: the input size policy, the encoder normalisation, the class names and, for
binary segmentation, the threshold. The pyfunc, ``visionflow predict``, the promotion gate and the predict
benchmark all run this one class. Its imports are the model libraries and visionflow's model factory,
transforms and runtime, which the logged model packs (``code_paths``).

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
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from visionflow.data.dataset import decode_rgb
from visionflow.data.transforms import apply_policy, pad_collate, restore_decide, size_groups
from visionflow.engine import Runtime

__all__ = [
    "PREPROCESSING_FILE",
    "Predictor",
    "Preprocessing",
    "VisionflowPyfunc",
    "decode_image",
    "decode_mask",
    "encode_mask",
    "to_frame",
]

PREPROCESSING_FILE = "preprocessing.json"


@dataclass(frozen=True)
class Preprocessing:
    """Everything between a user's image and the model's input, and between its logits and the answer."""

    task: str  # segmentation | classification
    classes: list[str]
    ignore_index: int
    policy: str  # resize | pad: how images reach the input size (and logits get back to the image's)
    size: list[int] | None  # [height, width]; null: the image's own size (padded to a multiple of 32)
    threshold: float | None = None  # binary segmentation: sigmoid > threshold is foreground
    precision: str = "fp32"  # fp32 | bf16 autocast for the forward pass
    channels_last: bool = True

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: str | Path) -> Preprocessing:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


def decode_image(value: Any, where: str = "image") -> np.ndarray:
    """A base64 PNG/JPEG string (or bytes) or an array -> (H, W, 3) uint8 RGB; errors say which input and why."""
    if isinstance(value, str | bytes):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"{where}: not valid base64 ({exc})") from None
        try:
            return decode_rgb(raw)
        except Exception as exc:  # any decoder failure: say what it was
            raise ValueError(f"{where}: not a decodable PNG/JPEG image ({exc})") from None
    array = np.asarray(value)
    if array.dtype == object:  # nested lists that came through JSON
        array = np.array(array.tolist())
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"{where}: expected an (H, W, 3) image array, got shape {array.shape}")
    if array.min(initial=0) < 0 or array.max(initial=0) > 255:
        raise ValueError(f"{where}: pixel values outside 0-255")
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
    """A model and its :class:`Preprocessing`: uint8 images in, masks or class probabilities out."""

    def __init__(self, model: torch.nn.Module, prep: Preprocessing, device: str | torch.device = "cpu") -> None:
        self.prep = prep
        self.runtime = Runtime(torch.device(device), prep.channels_last, prep.precision)
        self.model = self.runtime.prepare(model).eval()

    @classmethod
    def from_files(cls, weights: str | Path, preprocessing: str | Path) -> Predictor:
        from visionflow.models import load_model

        model, _ = load_model(Path(weights))
        return cls(model, Preprocessing.read(preprocessing))

    def _inputs(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        items = []
        for image in images:
            tensor = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))  # memmaps are read-only
            moved, _ = apply_policy(tensor, None, self.prep.policy, self.prep.size, self.prep.ignore_index)
            sizes = torch.tensor([moved.shape[0], moved.shape[1], tensor.shape[0], tensor.shape[1]])
            items.append((moved, torch.zeros(()), sizes))
        batch, _, sizes = pad_collate(items, self.prep.ignore_index)
        return batch, sizes

    @torch.inference_mode()
    def logits(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, h, w) or (N, C) logits of one batch, as the model returns them (bf16 under bf16 autocast), and
        the (input, original) sizes."""
        batch, sizes = self._inputs(images)
        with self.runtime.autocast():
            return self.model(self.runtime.images(batch)), sizes

    def predict(self, images: Sequence[np.ndarray], batch_size: int = 16) -> list[np.ndarray]:
        """Per image: a uint8 (H, W) class-id mask at the image's own size, or a vector of class probabilities."""
        out: list[np.ndarray] = []
        for start in range(0, len(images), batch_size):
            logits, sizes = self.logits(images[start : start + batch_size])
            if self.prep.task == "classification":
                out.extend(logits.float().softmax(dim=1).cpu().numpy())
                continue
            threshold = 0.5 if self.prep.threshold is None else self.prep.threshold
            for a, b, key in size_groups(sizes):
                out.extend(restore_decide(logits[a:b], key, self.prep.policy, threshold).to(torch.uint8).cpu().numpy())
        return out


def to_frame(prep: Preprocessing, outputs: Iterable[np.ndarray]) -> pd.DataFrame:
    """The pyfunc's answer: masks as base64 PNG, or labels with probabilities."""
    rows = []
    for output in outputs:
        if prep.task == "classification":
            best = int(np.argmax(output))
            rows.append(
                {
                    "label": prep.classes[best],
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
            raise ValueError(f"expected a column 'image'; got columns {list(model_input.columns)}")
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
    """MLflow pyfunc: artifacts ``weights`` (model.pt) and ``preprocessing`` (preprocessing.json)."""

    def load_context(self, context: Any) -> None:
        self.predictor = Predictor.from_files(context.artifacts["weights"], context.artifacts["preprocessing"])

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would read them as a schema
        """A DataFrame (or list) of base64 strings / uint8 arrays in, one result row per image out."""
        images = _images_from(model_input)
        return to_frame(self.predictor.prep, self.predictor.predict(images))
