"""Classification sources (ImageFolder, CSV, digits): every image becomes a manifest row with its class, and
a bad one is named and set aside, never dropped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import make_config
from visionflow.data.digits import CLASSES as DIGITS
from visionflow.errors import DataValidationError, SourceError
from visionflow.handoffs import Manifest
from visionflow.stages import balance, prepare, validate


def image(path: Path, seed: int, size: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def imagefolder(root: Path, per_class: dict[str, int], splits: tuple[str, ...] = ("train", "val")) -> Path:
    seed = 0
    for split in splits:
        for name, count in per_class.items():
            for i in range(count):
                seed += 1
                image(root / split / name / f"img_{i}.png", seed)  # numbered per split, as is common
    return root


def classification(root: Path, source: str, **extra: object) -> dict[str, object]:
    task = {"project.task": "classification", "train.loss": {"ce": 1}}
    return task | {"data.source": source, "data.root": str(root), **extra}


def test_imagefolder_labels_each_image_by_its_folder(workdir: Path) -> None:
    root = imagefolder(workdir / "pets", {"cat": 3, "dog": 2})
    config = make_config(classification(root, "imagefolder"))
    result = prepare.run(config)
    manifest = Manifest.read(config.paths).rows
    assert len(result.rows) == 10 and result.per_split == {"train": 5, "val": 5}
    assert set(manifest["id"]) >= {"train/cat/img_0", "val/cat/img_0"}, "stems repeat across classes and splits"
    cats = manifest[manifest["image_path"].str.contains("/cat/")]
    assert (cats["label"] == 0).all() and (cats["px_0"] == 1).all() and (cats["px_1"] == 0).all()
    validate.run(config)
    weights = balance.run(config)
    assert weights.pixel_counts == (3, 2), "classification balances by image counts"
    assert weights.weights[1] > weights.weights[0], "the rarer class weighs more"


def test_imagefolder_image_outside_a_class_folder_is_named_and_quarantined(workdir: Path) -> None:
    root = imagefolder(workdir / "pets", {"cat": 3, "dog": 3})
    image(root / "train" / "stray.png", 99)
    fail = make_config(classification(root, "imagefolder"))
    prepare.run(fail)
    with pytest.raises(DataValidationError, match=r"stray\.png"):
        validate.run(fail)
    keep = make_config(classification(root, "imagefolder", **{"validate.on_error": "quarantine"}))
    prepare.run(keep)
    summary = validate.run(keep)
    assert (summary.inputs, summary.accepted, summary.quarantined) == (13, 12, 1)
    quarantined = pd.read_csv(keep.paths.quarantine)
    assert quarantined["file"].str.endswith("train/stray.png").all() and "label_known" in quarantined["checks"][0]


def test_csv_source_reads_paths_labels_and_splits(workdir: Path) -> None:
    root = workdir / "scans"
    rows = []
    for i in range(8):
        label = ["benign", "malignant"][i % 2]
        image(root / "imgs" / f"s{i}.png", i)
        rows.append({"file": f"imgs/s{i}.png", "diagnosis": label, "fold": "val" if i >= 6 else "train"})
    rows.append({"file": "imgs/missing.png", "diagnosis": "benign", "fold": "train"})
    image(root / "imgs" / "s8.png", 8)
    rows.append({"file": "imgs/s8.png", "diagnosis": "unknown", "fold": "train"})
    pd.DataFrame(rows).to_csv(root / "table.csv", index=False)
    params = {"data.csv.file": "table.csv", "data.csv.image": "file", "data.csv.label": "diagnosis"}
    params |= {"data.csv.split": "fold", "data.classes": ["benign", "malignant"], "validate.on_error": "quarantine"}
    config = make_config(classification(root, "csv", **params))
    prepare.run(config)
    manifest = Manifest.read(config.paths).rows
    missing = manifest[manifest["image_path"].str.endswith("missing.png")].iloc[0]
    assert missing["image_error"] == "image file not found"
    unknown = manifest["label_error"].dropna().tolist()
    assert unknown == ["label 'unknown' is not a class (benign, malignant)"]
    summary = validate.run(config)
    assert (summary.inputs, summary.accepted, summary.quarantined) == (10, 8, 2)


def test_csv_source_names_missing_columns(workdir: Path) -> None:
    root = workdir / "scans"
    root.mkdir()
    (root / "labels.csv").write_text("path,label\nx.png,a\n")
    with pytest.raises(SourceError, match=r"no column\(s\) image, split .* it has path, label"):
        prepare.run(make_config(classification(root, "csv")))


def test_digits_source_is_real_stratified_and_deterministic(workdir: Path) -> None:
    config = make_config(classification(Path("digits.py"), "digits"))
    first = prepare.run(config)
    assert len(first.rows) == 1797 and first.per_split["val"] == pytest.approx(0.2 * 1797, abs=10)
    manifest = Manifest.read(config.paths).rows
    val = manifest[manifest["split"] == "val"]
    shares = val["label"].value_counts(normalize=True)
    assert len(shares) == len(DIGITS) and shares.between(0.08, 0.12).all(), "every digit in val at its share"
    assert (manifest["width"] == 32).all() and (manifest["mode"] == "RGB").all()
    hashes = manifest["sha256"].tolist()
    prepare.run(config)
    assert Manifest.read(config.paths).rows["sha256"].tolist() == hashes


def test_task_and_source_must_match() -> None:
    from visionflow.config import ConfigError

    with pytest.raises(ConfigError, match=r"data\.source .digits. is a classification source"):
        make_config({"data.source": "digits"})
    with pytest.raises(ConfigError, match="'dice' is a segmentation loss"):
        make_config({"project.task": "classification", "data.source": "digits"})
