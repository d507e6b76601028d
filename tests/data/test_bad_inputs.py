"""One test per kind of bad input: what validate says in `fail` mode, and that `quarantine` loses nothing."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import folder_params, make_config
from visionflow.config import Config
from visionflow.errors import DataValidationError
from visionflow.stages import prepare, validate

Mutation = Callable[[Path], str]  # changes the dataset under root, returns the file that validate must name


def truncate(root: Path) -> str:
    path = root / "train" / "frame_001.png"
    path.write_bytes(path.read_bytes()[:200])
    return "train/frame_001.png"


def zero_bytes(root: Path) -> str:
    (root / "train" / "frame_001.png").write_bytes(b"")
    return "train/frame_001.png"


def text_file(root: Path) -> str:
    (root / "train" / "frame_001.png").write_text("this is not an image\n")
    return "train/frame_001.png"


def mask_other_size(root: Path) -> str:
    Image.new("L", (48, 64)).save(root / "trainannot" / "frame_001.png")
    return "train/frame_001.png"


def mask_out_of_range(root: Path) -> str:
    path = root / "trainannot" / "frame_001.png"
    mask = np.array(Image.open(path))
    mask[5, 5] = 42
    Image.fromarray(mask).save(path)
    return "train/frame_001.png"


def mask_16bit(root: Path) -> str:
    path = root / "trainannot" / "frame_001.png"
    Image.fromarray(np.array(Image.open(path)).astype(np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I;16")
    return "train/frame_001.png"


def mask_all_ignore(root: Path) -> str:
    Image.new("L", (64, 64), color=11).save(root / "trainannot" / "frame_001.png")
    return "train/frame_001.png"


def rgba_image(root: Path) -> str:
    path = root / "train" / "frame_001.png"
    Image.open(path).convert("RGBA").save(path)
    return "train/frame_001.png"


def grayscale_image(root: Path) -> str:
    path = root / "train" / "frame_001.png"
    Image.open(path).convert("L").save(path)
    return "train/frame_001.png"


def exact_copy_across_splits(root: Path) -> str:
    shutil.copy(root / "train" / "frame_000.png", root / "val" / "copy.png")
    shutil.copy(root / "trainannot" / "frame_000.png", root / "valannot" / "copy.png")
    return "val/copy.png"


def resized_copy_across_splits(root: Path) -> str:
    Image.open(root / "train" / "frame_000.png").resize((48, 48), Image.Resampling.BILINEAR).save(
        root / "val" / "resized.png"
    )
    Image.open(root / "trainannot" / "frame_000.png").resize((48, 48), Image.Resampling.NEAREST).save(
        root / "valannot" / "resized.png"
    )
    return "val/resized.png"


def missing_mask(root: Path) -> str:
    (root / "trainannot" / "frame_001.png").unlink()
    return "train/frame_001.png"


def odd_name(root: Path) -> str:
    for folder in ("train", "trainannot"):
        (root / folder / "frame_002.png").rename(root / folder / "straße café 02.png")
    return "train/straße café 02.png"


def escapes_root(root: Path) -> str:
    outside = root.parent / "outside"
    outside.mkdir()
    shutil.copy(root / "train" / "frame_000.png", outside / "x.png")
    os.symlink(outside / "x.png", root / "train" / "escape.png")
    shutil.copy(root / "trainannot" / "frame_003.png", root / "trainannot" / "escape.png")
    return "train/escape.png"


# mutation, check that must fire, its severity with default params, extra params
CASES: dict[str, tuple[Mutation, str, str, dict[str, str]]] = {
    "truncated_png": (truncate, "image_decodes", "error", {}),
    "zero_byte_file": (zero_bytes, "image_decodes", "error", {}),
    "text_file_named_png": (text_file, "image_decodes", "error", {}),
    "mask_of_another_size": (mask_other_size, "mask_width", "error", {}),
    "mask_value_out_of_range": (mask_out_of_range, "mask_values", "error", {}),
    "mask_16bit_converted": (mask_16bit, "mask_bit_depth", "warning", {}),
    "mask_16bit_rejected": (mask_16bit, "mask_bit_depth", "error", {"validate.masks_16bit": "reject"}),
    "mask_entirely_ignored": (mask_all_ignore, "mask_labelled", "error", {}),
    "rgba_image_converted": (rgba_image, "rgb", "warning", {}),
    "rgba_image_rejected": (rgba_image, "rgb", "error", {"validate.channels": "reject"}),
    "grayscale_image_converted": (grayscale_image, "rgb", "warning", {}),
    "exact_duplicate_across_splits": (exact_copy_across_splits, "exact_duplicate", "error", {}),
    "resized_near_duplicate_across_splits": (resized_copy_across_splits, "near_duplicate_leak", "error", {}),
    "missing_mask": (missing_mask, "mask_decodes", "error", {}),
    "path_escaping_the_data_root": (escapes_root, "inside_root", "error", {}),
}


def config_for(root: Path, **overrides: str) -> Config:
    return make_config(folder_params(root, **overrides))


def run_validation(config: Config) -> tuple[dict, DataValidationError | None]:
    prepare.run(config)
    try:
        validate.run(config)
        error = None
    except DataValidationError as exc:
        error = exc
    return json.loads(config.paths.validation_summary.read_text()), error


def failures_for(summary: dict, check: str) -> list[dict]:
    return [f for f in summary["failures"] if f["check"] == check]


@pytest.mark.parametrize("case", list(CASES))
def test_fail_mode_names_the_file_and_the_check(case: str, workdir: Path, camvid_like: Callable[..., Path]) -> None:
    mutate, check, severity, extra = CASES[case]
    root = camvid_like(workdir / "data", 6, 3)
    named = (root / mutate(root)).relative_to(workdir).as_posix()
    summary, error = run_validation(config_for(root, **extra))
    found = failures_for(summary, check)
    assert [f["file"] for f in found] == [named], summary["failures"]
    assert found[0]["severity"] == severity
    if severity == "error":
        assert error is not None and named in str(error)
        assert not summary["success"]
    else:
        assert error is None and summary["success"], "a converted input is reported, not rejected"
        assert summary["accepted"] == summary["inputs"]


@pytest.mark.parametrize("case", list(CASES))
def test_quarantine_mode_accounts_for_every_input(case: str, workdir: Path, camvid_like: Callable[..., Path]) -> None:
    mutate, check, severity, extra = CASES[case]
    root = camvid_like(workdir / "data", 6, 3)
    named = (root / mutate(root)).relative_to(workdir).as_posix()
    config = config_for(root, **{"validate.on_error": "quarantine", **extra})
    summary, error = run_validation(config)
    assert error is None and summary["success"]
    assert summary["inputs"] == summary["accepted"] + summary["quarantined"] and summary["accounted"]
    quarantine = pd.read_csv(config.paths.quarantine)
    accepted = pd.read_csv(config.paths.accepted)
    if severity == "error":
        assert quarantine["file"].tolist() == [named] and check in quarantine["reasons"].iloc[0]
        assert named not in accepted["image_path"].tolist()
    else:
        assert quarantine.empty and summary["quarantined"] == 0
    assert len(accepted) == summary["accepted"]


def test_name_with_spaces_and_non_ascii_letters_is_accepted(workdir: Path, camvid_like: Callable[..., Path]) -> None:
    root = camvid_like(workdir / "data", 6, 3)
    named = (root / odd_name(root)).relative_to(workdir).as_posix()
    summary, error = run_validation(config_for(root))
    assert error is None and summary["failures"] == []
    assert named in pd.read_csv(config_for(root).paths.accepted)["image_path"].tolist()


@pytest.mark.parametrize("mode", ["fail", "quarantine"])
def test_empty_split_stops_the_pipeline_in_both_modes(
    mode: str, workdir: Path, camvid_like: Callable[..., Path]
) -> None:
    root = camvid_like(workdir / "data", 6, 3)
    for folder in ("val", "valannot"):
        for path in (root / folder).iterdir():
            path.unlink()
    summary, error = run_validation(config_for(root, **{"validate.on_error": mode}))
    assert error is not None and "splits_not_empty failed for val" in str(error)
    assert [f["check"] for f in summary["failures"]] == ["splits_not_empty"]
    assert summary["inputs"] == summary["accepted"] + summary["quarantined"] == 6


def test_quarantine_that_empties_a_split_still_stops(workdir: Path, camvid_like: Callable[..., Path]) -> None:
    root = camvid_like(workdir / "data", 4, 1)
    (root / "val" / "frame_004.png").write_bytes(b"")
    summary, error = run_validation(config_for(root, **{"validate.on_error": "quarantine"}))
    assert error is not None
    assert summary["quarantined"] == 1 and summary["accepted"] == 4
    assert {f["check"] for f in summary["failures"]} == {"image_decodes", "splits_not_empty"}


def test_palette_mask_is_read_as_class_ids(workdir: Path, camvid_like: Callable[..., Path]) -> None:
    root = camvid_like(workdir / "data", 6, 3)
    path = root / "trainannot" / "frame_001.png"
    values = np.array(Image.open(path))
    palette = Image.fromarray(values, mode="L").convert("P")
    palette.putdata(values.ravel().tolist())
    palette.save(path)
    assert Image.open(path).mode == "P" and np.array_equal(np.array(Image.open(path)), values)
    summary, error = run_validation(config_for(root))
    assert error is None and summary["failures"] == []
