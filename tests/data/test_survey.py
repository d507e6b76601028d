"""`visionflow init`: generated folders of each layout are read as they are, and the params it writes read them."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import PINNED, REPO, TINY, camvid_like_dataset
from visionflow.cli import app
from visionflow.config import BuiltinConfig, Config, load_config
from visionflow.data import builtin
from visionflow.data.survey import Survey, params_text, survey
from visionflow.handoffs import ValidationSummary
from visionflow.stages import prepare, validate

COLOURS = ((0, 0, 0), (128, 64, 128), (220, 20, 60), (0, 0, 142), (250, 170, 30), (107, 142, 35))  # by class id


def _samples(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    cfg = BuiltinConfig(image_size=64, seed=5)
    return [builtin.generate_sample(i, cfg, has_rare=i % 3 == 0) for i in range(count)]


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(array).save(path)


def binary_templated(root: Path) -> Path:
    """images/<split>/road_0001.jpg with labels/<split>/road_0001_mask.png holding 0 and 255."""
    for i, (image, mask) in enumerate(_samples(16)):
        split = "train" if i < 12 else "val"
        _save(root / "images" / split / f"road_{i:04d}.jpg", image)
        _save(root / "labels" / split / f"road_{i:04d}_mask.png", np.where(mask > 0, 255, 0).astype(np.uint8))
    return root


def colour_coded(root: Path) -> Path:
    """<split>/00001.png with <split>_labels/00001_L.png in RGB, a colour per class."""
    for i, (image, mask) in enumerate(_samples(16)):
        split = "train" if i < 12 else "val"
        _save(root / split / f"{i:05d}.png", image)
        _save(root / f"{split}_labels" / f"{i:05d}_L.png", np.array(COLOURS, np.uint8)[mask])
    return root


def without_val(root: Path) -> Path:
    """images/ and masks/ with the same names, no split at all; a region mask folder beside them."""
    for i, (image, mask) in enumerate(_samples(20)):
        _save(root / "images" / f"{i:03d}.png", image)
        _save(root / "masks" / f"{i:03d}.png", mask)
        _save(root / "roi" / f"{i:03d}_roi.png", np.full(mask.shape, 255, np.uint8))
    return root


def class_folders(root: Path) -> Path:
    for i, (image, _) in enumerate(_samples(18)):
        split, label = ("train" if i < 12 else "val"), ("cat", "dog", "fox")[i % 3]
        _save(root / split / label / f"{i:03d}.png", image)
    return root


def labelled_table(root: Path) -> Path:
    rows = [["file", "kind", "subset"]]
    for i, (image, _) in enumerate(_samples(18)):
        _save(root / "pictures" / f"{i:03d}.png", image)
        rows.append([f"pictures/{i:03d}.png", ("cat", "dog", "fox")[i % 3], "train" if i < 12 else "val"])
    with (root / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return root


def _prepared(tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ValidationSummary, Path]:
    """init --write into a copy of params.yaml, then prepare and validate with what it wrote."""
    project = tmp_path / "project"
    project.mkdir()
    params = project / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    result = CliRunner().invoke(app, ["init", str(root), "--params", str(params), "--write"])
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(project)
    config = load_config(params, PINNED | TINY)
    prepare.run(config)
    validate.run(config)
    return ValidationSummary.read(config.paths), params


def test_binary_masks_with_templated_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = binary_templated(tmp_path / "roads")
    found = survey(root)
    assert found.data["splits"] == {"train": {"images": "images/train", "masks": "labels/train"},
                                    "val": {"images": "images/val", "masks": "labels/val"}}  # fmt: skip
    assert found.data["names"] == {"image": "road_{id}", "mask": "road_{id}_mask", "region": "{id}"}
    assert found.data["masks"] == {"values": {0: "background", 255: "foreground"}}
    report = found.report()
    assert "split train: images images/train/, masks labels/train/: 12 images, 12 masks, 12 paired" in report
    assert "0/255 masks" in report and "not decided: class names" in report
    summary, params = _prepared(tmp_path, root, monkeypatch)
    assert summary.success and summary.accepted == summary.inputs == 16
    config = load_config(params)
    assert config.model_name == "roads-segmenter" and config.register_.model_name == "roads-segmenter"
    assert config.data.root == Path("../roads"), "the root as the project sees it"
    assert "# segmentation | classification" in params.read_text(), "the other sections keep their comments"


def test_colour_coded_masks_get_a_colour_table_and_placeholder_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = colour_coded(tmp_path / "Street Scenes")
    found = survey(root)
    assert found.data["splits"]["val"] == {"images": "val", "masks": "val_labels"}
    assert found.data["names"]["mask"] == "{id}_L"
    colours = found.data["masks"]["colors"]
    assert len(colours) == len(COLOURS) and colours["#000000"] == "background"
    assert sorted(found.data["classes"]) == sorted(colours.values())
    summary, params = _prepared(tmp_path, root, monkeypatch)
    assert summary.success and summary.accepted == 16
    assert load_config(params).model_name == "street-scenes-segmenter"


def test_class_ids_in_camvids_layout(tmp_path: Path) -> None:
    root = camvid_like_dataset(tmp_path / "camvid_like", 8, 4)
    found = survey(root)
    assert found.data["splits"]["train"] == {"images": "train", "masks": "trainannot"}
    assert "names" not in found.data, "the same names: the default templates"
    assert found.data["classes"] == [f"class_{i}" for i in range(len(builtin.CLASSES))]


def test_no_val_split_carves_one_and_region_masks_pair_by_their_own_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = without_val(tmp_path / "plates")
    found = survey(root)
    assert found.data["splits"] == {"train": {"images": "images", "masks": "masks", "regions": "roi"}}
    assert found.data["names"]["region"] == "{id}_roi" and found.data["val_split"]["by"] == "image"
    assert any("no val split" in line for line in found.undecided)
    summary, _ = _prepared(tmp_path, root, monkeypatch)
    assert summary.success and summary.accepted == 20


def test_class_folders_and_a_table_are_classification(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folders = survey(class_folders(tmp_path / "animals"))
    assert (folders.task, folders.data["source"], folders.data["classes"]) == ("classification", "imagefolder",
                                                                               ["cat", "dog", "fox"])  # fmt: skip
    table = survey(labelled_table(tmp_path / "tabled"))
    assert table.data["csv"] == {"file": "labels.csv", "image": "file", "label": "kind", "split": "subset"}
    summary, params = _prepared(tmp_path, tmp_path / "animals", monkeypatch)
    assert summary.success and summary.accepted == 18
    config = load_config(params)
    assert config.project.task == "classification" and config.model_name == "animals-classifier"
    assert config.train.epochs != "auto" and config.train.loss.get("dice") == 0


def test_without_write_params_stay_as_they_were(tmp_path: Path) -> None:
    root = binary_templated(tmp_path / "roads")
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    before = params.read_text()
    result = CliRunner().invoke(app, ["init", str(root), "--params", str(params)])
    assert result.exit_code == 0 and params.read_text() == before
    assert (
        "values: {0: background, 255: foreground}" in result.output and "model_name: roads-segmenter" in result.output
    )
    assert "not changed; --write writes" in result.output
    nothing = CliRunner().invoke(app, ["init", str(tmp_path / "missing"), "--params", str(params)])
    assert nothing.exit_code == 7 and "not a folder" in nothing.output


def _outside_data(text: str) -> list[str]:
    """The lines of params.yaml outside its data section, but for register.model_name's."""
    lines = text.splitlines()
    start = lines.index("data:") - lines[lines.index("data:") - 1].startswith("# data: written by")
    end = next(i for i in range(lines.index("data:") + 1, len(lines)) if lines[i][:1] not in ("", " ", "#"))
    return [line for line in lines[:start] + lines[end:] if not line.startswith("  model_name:")]


def test_params_text_replaces_only_the_data_section_and_the_registered_name() -> None:
    shipped = (REPO / "params.yaml").read_text()
    data = {"source": "folder", "root": "x", "preset": "camvid"}
    text = params_text(shipped, Survey(Path("x"), data=data), "x-segmenter")
    assert _outside_data(text) == _outside_data(shipped)
    assert "  model_name: x-segmenter  # written by visionflow init" in text
    written = load_config_text(text)
    assert written.data.preset == "camvid" and written.data.builtin.kind == "shapes", "every data key is there"


def load_config_text(text: str) -> Config:
    return Config.model_validate(yaml.safe_load(text))
