"""Real data: ../shared/data/camvid (skipped with a reason where it is absent)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import make_config
from visionflow.errors import DataValidationError
from visionflow.stages import prepare, validate

pytestmark = pytest.mark.camvid


def test_prepare_and_validate_camvid(workdir: Path, camvid_root: Path) -> None:
    config = make_config({"data.source": "folder", "data.root": str(camvid_root), "data.preset": "camvid"})
    prepared = prepare.run(config)
    assert prepared.per_split == {"train": 367, "val": 101} and prepared.unreadable == 0
    result = validate.run(config)
    assert result.success and result.inputs == 468


def test_camvid_copy_with_two_bad_files_names_both(workdir: Path, camvid_root: Path) -> None:
    """A copy of CamVid with one truncated PNG and one mask of the wrong size: validate names both."""
    copy = workdir / "camvid"
    for split in ("train", "trainannot", "val", "valannot"):
        shutil.copytree(camvid_root / split, copy / split)
    bad_image = copy / "train" / "0001TP_006690.png"
    data = bad_image.read_bytes()
    bad_image.write_bytes(data[: len(data) // 3])
    bad_mask = copy / "valannot" / sorted(p.name for p in (camvid_root / "valannot").iterdir())[0]
    Image.new("L", (240, 180)).save(bad_mask)
    config = make_config({"data.source": "folder", "data.root": str(copy), "data.preset": "camvid"})
    prepare.run(config)
    with pytest.raises(DataValidationError) as err:
        validate.run(config)
    assert bad_image.name in str(err.value) and bad_mask.name in str(err.value)
    assert "2 file(s)" in str(err.value) and "near_duplicate" not in str(err.value)
