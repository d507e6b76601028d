from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import folder_params, make_config, write_pair
from visionflow.config import BuiltinConfig, Config
from visionflow.data import builtin
from visionflow.stages import prepare, validate
from visionflow.stages.validate import DataValidationError, ValidateResult


def folder_config(root: Path) -> Config:
    return make_config(folder_params(root))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def prepare_and_validate(config: Config) -> ValidateResult:
    prepare.run(config)
    return validate.run(config)


def test_clean_builtin_data_passes(tiny_config: Config) -> None:
    result = prepare_and_validate(tiny_config)
    assert result.success and result.inputs == result.accepted == 24 and result.quarantined == 0
    summary = json.loads(tiny_config.paths.validation_summary.read_text())
    assert summary["success"] and {c["check"] for c in summary["checks"]} >= {"image_decodes", "mask_values"}
    assert (tiny_config.paths.data_docs / "index.html").is_file()


def test_truncated_png_and_wrong_size_mask_are_named(workdir: Path, camvid_like: Callable[..., Path]) -> None:
    root = camvid_like(workdir / "cam", 6, 3)
    truncate(root / "train" / "frame_001.png")
    Image.new("L", (48, 64)).save(root / "valannot" / "frame_007.png")
    config = folder_config(root)
    with pytest.raises(DataValidationError) as err:
        prepare_and_validate(config)
    assert "frame_001.png" in str(err.value) and "frame_007.png" in str(err.value)
    summary = json.loads(config.paths.validation_summary.read_text())
    by_check = {(f["check"], Path(f["file"]).name) for f in summary["failures"]}
    assert by_check == {("image_decodes", "frame_001.png"), ("mask_width", "frame_007.png")}
    assert summary["inputs"] == 9 and summary["accepted"] == 7
    assert (config.paths.data_docs / "index.html").is_file(), "Data Docs are written on failure too"


def test_out_of_range_mask_value(workdir: Path, camvid_like: Callable[..., Path]) -> None:
    root = camvid_like(workdir / "cam", 4, 2)
    mask = np.array(Image.open(root / "trainannot" / "frame_002.png"))
    mask[0, 0] = 42
    Image.fromarray(mask).save(root / "trainannot" / "frame_002.png")
    with pytest.raises(DataValidationError, match=r"frame_002\.png"):
        prepare_and_validate(folder_config(root))
    failures = json.loads(folder_config(root).paths.validation_summary.read_text())["failures"]
    assert failures == [
        {
            "file": "cam/train/frame_002.png",
            "check": "mask_values",
            "severity": "error",
            "value": "invalid_values=42",
            "expected": "mask values are class ids or the ignore index",
        }
    ]


def test_copy_across_splits_is_leakage(workdir: Path, camvid_like: Callable[..., Path]) -> None:
    root = camvid_like(workdir / "cam", 4, 2)
    shutil.copy(root / "train" / "frame_000.png", root / "val" / "copy.png")
    shutil.copy(root / "trainannot" / "frame_000.png", root / "valannot" / "copy.png")
    config = folder_config(root)
    with pytest.raises(DataValidationError) as err:
        prepare_and_validate(config)
    assert "cam/val/copy.png" in str(err.value) and "frame_000.png" not in str(err.value), "the train copy is kept"
    (failure,) = json.loads(config.paths.validation_summary.read_text())["failures"]
    assert failure["check"] == "exact_duplicate" and "cam/train/frame_000.png" in failure["value"]


def test_same_name_in_two_splits(workdir: Path, camvid_like: Callable[..., Path]) -> None:
    root = camvid_like(workdir / "cam", 4, 2)
    image, mask = builtin.generate_sample(99, BuiltinConfig(seed=11), has_rare=False)
    write_pair(root, ("train", "trainannot"), "frame_005.png", image, mask)  # another picture, the same name
    config = folder_config(root)
    with pytest.raises(DataValidationError):
        prepare_and_validate(config)
    checks = {f["check"] for f in json.loads(config.paths.validation_summary.read_text())["failures"]}
    assert checks == {"one_split"}


def test_missing_mask_and_empty_val(workdir: Path, camvid_like: Callable[..., Path]) -> None:
    root = camvid_like(workdir / "cam", 3, 1)
    (root / "valannot" / "frame_003.png").unlink()
    (root / "val" / "frame_003.png").unlink()
    (root / "trainannot" / "frame_001.png").unlink()
    config = folder_config(root)
    with pytest.raises(DataValidationError, match=r"frame_001\.png"):
        prepare_and_validate(config)
    failures = json.loads(config.paths.validation_summary.read_text())["failures"]
    assert {f["check"] for f in failures} == {"mask_decodes", "splits_not_empty"}, "an empty val split is reported"


def test_drift_against_the_last_accepted_data_is_a_warning_with_numbers(
    workdir: Path, camvid_like: Callable[..., Path]
) -> None:
    root = camvid_like(workdir / "cam", 6, 3)
    config = folder_config(root)
    first = prepare_and_validate(config)
    assert first.reference == "none yet" and config.paths.validation_reference.is_file()
    for path in (root / "train").iterdir():  # the next delivery is much darker
        image = np.array(Image.open(path)) // 4
        Image.fromarray(image).save(path)
    second = prepare_and_validate(config)
    assert second.success and second.reference == "9 images"
    drifted = {d["statistic"]: d for d in second.drift if d["exceeds"]}
    assert "brightness_mean" in drifted
    assert drifted["brightness_mean"]["change"] < -20
    assert "brightness_mean" in config.paths.validation_report.read_text()


def test_a_class_missing_from_train_is_named(workdir: Path, camvid_like: Callable[..., Path]) -> None:
    root = camvid_like(workdir / "cam", 6, 3)
    config = make_config(folder_params(root, **{"data.classes": [*builtin.CLASSES, "unicorn"]}))
    with pytest.raises(DataValidationError, match="classes_in_train failed for unicorn"):
        prepare_and_validate(config)


def test_class_share_bounds_warn(workdir: Path, camvid_like: Callable[..., Path]) -> None:
    root = camvid_like(workdir / "cam", 6, 3)
    config = make_config(folder_params(root, **{"validate.class_share": {"min": 0.0, "max": 0.5}}))
    result = prepare_and_validate(config)
    assert result.success
    assert [(f.check, f.file, f.severity) for f in result.failures] == [("class_share", "background", "warning")]


def test_severity_override_turns_a_warning_into_an_error(workdir: Path, camvid_like: Callable[..., Path]) -> None:
    root = camvid_like(workdir / "cam", 6, 3)
    config = make_config(
        folder_params(
            root, **{"validate.class_share": {"min": 0.0, "max": 0.5}, "validate.severity": {"class_share": "error"}}
        )
    )
    with pytest.raises(DataValidationError, match="class_share failed for background"):
        prepare_and_validate(config)


def test_unknown_check_in_severity_is_a_clear_error(workdir: Path, camvid_like: Callable[..., Path]) -> None:
    root = camvid_like(workdir / "cam", 4, 2)
    config = make_config(folder_params(root, **{"validate.severity": {"no_such_check": "error"}}))
    prepare.run(config)
    with pytest.raises(ValueError, match="no_such_check"):
        validate.run(config)
