"""``visionflow predict``: a logged model over a folder of images; masks and overlays, or a CSV of labels.

Unreadable files are listed in ``errors.csv`` (and on the console) and the rest go on: nothing is dropped
silently, and one bad file does not stop a folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from visionflow.data.dataset import load_rgb
from visionflow.data.sources import IMAGE_SUFFIXES
from visionflow.plots import class_palette
from visionflow.serving import Predictor

__all__ = ["PredictResult", "overlay", "predict_folder"]


@dataclass(frozen=True)
class PredictResult:
    images: int
    failed: int
    output: Path


def overlay(image: np.ndarray, mask: np.ndarray, num_classes: int, alpha: float = 0.5) -> np.ndarray:
    """The image with each class painted in its palette colour (class 0 left as it is)."""
    colours = class_palette(num_classes)[np.clip(mask, 0, num_classes - 1)].astype(np.float32)
    blended = image.astype(np.float32) * (1 - alpha) + colours * alpha
    blended[mask == 0] = image[mask == 0]
    return blended.round().clip(0, 255).astype(np.uint8)


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"--input '{folder}' is not a folder of images")
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise FileNotFoundError(f"--input '{folder}': no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return found


def predict_folder(predictor: Predictor, source: Path, output: Path, batch_size: int = 16) -> PredictResult:
    prep = predictor.prep
    output.mkdir(parents=True, exist_ok=True)
    files = _images(source)
    errors, rows = [], []
    bar = tqdm(total=len(files), desc="predict", unit="img")
    for start in range(0, len(files), batch_size):
        batch, images = [], []
        for path in files[start : start + batch_size]:
            try:
                images.append(load_rgb(path))
                batch.append(path)
            except Exception as exc:  # a bad file is reported, the others go on
                errors.append({"file": str(path), "error": f"does not decode: {exc}"})
                tqdm.write(f"predict: {path}: does not decode ({exc}); listed in {output / 'errors.csv'}")
        for path, image, result in zip(batch, images, predictor.predict(images, batch_size), strict=True):
            if prep.task == "classification":
                best = int(np.argmax(result))
                probabilities = {f"p_{name}": round(float(p), 6) for name, p in zip(prep.classes, result, strict=True)}
                rows.append({"file": path.name, "label": prep.classes[best], "probability": float(result[best])})
                rows[-1] |= probabilities
            else:
                Image.fromarray(result, "L").save(output / f"{path.stem}.png")
                Image.fromarray(overlay(image, result, len(prep.classes))).save(output / f"{path.stem}_overlay.png")
        bar.update(len(files[start : start + batch_size]))
    bar.close()
    if rows:
        pd.DataFrame(rows).to_csv(output / "predictions.csv", index=False)
    if errors:
        pd.DataFrame(errors).to_csv(output / "errors.csv", index=False)
    return PredictResult(len(files) - len(errors), len(errors), output)
