"""``visionflow predict``: a logged model over a folder of images; masks and overlays, or a CSV of labels.

Unreadable files are listed in ``errors.csv`` (and on the console) and the rest go on: nothing is dropped
silently, and one bad file does not stop a folder.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from visionflow.data.dataset import load_rgb
from visionflow.data.sources import IMAGE_SUFFIXES
from visionflow.plots import class_palette
from visionflow.serving import Predictor, Preprocessing

__all__ = ["PredictResult", "overlay", "predict_folder"]


@dataclass(frozen=True)
class PredictResult:
    images: int
    failed: int
    output: Path


@functools.cache
def _palette(num_classes: int) -> list[int]:
    return class_palette(num_classes).astype(np.uint8).reshape(-1).tolist()


def overlay(image: np.ndarray, mask: np.ndarray, num_classes: int, alpha: float = 0.5) -> Image.Image:
    """The image with each class painted in its palette colour (class 0 left as it is).

    Done with PIL's C kernels (palette lookup, blend, composite): ~1 ms for a 360x480 frame, 4x the numpy way.
    """
    base = Image.fromarray(image)
    labels = Image.fromarray(np.minimum(mask, num_classes - 1).astype(np.uint8), "P")
    labels.putpalette(_palette(num_classes))
    painted = Image.blend(base, labels.convert("RGB"), alpha)
    return Image.composite(painted, base, Image.fromarray(mask.astype(np.uint8), "L").point([0] + [255] * 255))


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"--input '{folder}' is not a folder of images")
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise FileNotFoundError(f"--input '{folder}': no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return found


def _read(paths: list[Path]) -> tuple[list[Path], list[np.ndarray], list[dict[str, str]]]:
    """Decode a batch; a file that fails is an error row, never an exception that stops the folder."""
    kept, images, errors = [], [], []
    for path in paths:
        try:
            images.append(load_rgb(path))
            kept.append(path)
        except Exception as exc:
            errors.append({"file": str(path), "error": f"does not decode: {exc}"})
    return kept, images, errors


def _write(prep: Preprocessing, output: Path, paths: list[Path], images: list[np.ndarray], results: list) -> list:
    """Mask PNGs and overlay JPEGs (segmentation), or the CSV rows (classification)."""
    rows = []
    for path, image, result in zip(paths, images, results, strict=True):
        if prep.task == "classification":
            best = int(np.argmax(result))
            row = {"file": path.name, "label": prep.classes[best], "probability": float(result[best])}
            rows.append(row | {f"p_{name}": round(float(p), 6) for name, p in zip(prep.classes, result, strict=True)})
        else:
            # the mask stays lossless PNG (compress_level 1: ~10% larger, several times faster than the default);
            # the overlay is for eyes: JPEG encodes a 360x480 frame in ~0.3 ms, PNG took ~11 ms
            Image.fromarray(result, "L").save(output / f"{path.stem}.png", compress_level=1)
            overlay(image, result, len(prep.classes)).save(output / f"{path.stem}_overlay.jpg", quality=90)
    return rows


def predict_folder(predictor: Predictor, source: Path, output: Path, batch_size: int = 16) -> PredictResult:
    """Decoding the next batch and writing the last one run in threads while the model computes."""
    prep = predictor.prep
    output.mkdir(parents=True, exist_ok=True)
    files = _images(source)
    batches = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    errors: list[dict[str, str]] = []
    rows: list[dict] = []
    with ThreadPoolExecutor(max_workers=2) as pool, tqdm(total=len(files), desc="predict", unit="img") as bar:
        reading = pool.submit(_read, batches[0])
        writing = []
        for index in range(len(batches)):
            paths, images, failed = reading.result()
            if index + 1 < len(batches):
                reading = pool.submit(_read, batches[index + 1])
            for error in failed:
                tqdm.write(f"predict: {error['file']}: {error['error']}; listed in {output / 'errors.csv'}")
            errors.extend(failed)
            results = predictor.predict(images, batch_size) if images else []
            writing.append(pool.submit(_write, prep, output, paths, images, results))
            bar.update(len(batches[index]))
        for job in writing:
            rows.extend(job.result())
    if rows:
        pd.DataFrame(rows).to_csv(output / "predictions.csv", index=False)
    if errors:
        pd.DataFrame(errors).to_csv(output / "errors.csv", index=False)
    return PredictResult(len(files) - len(errors), len(errors), output)
