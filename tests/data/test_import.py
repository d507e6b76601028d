"""Datasets as they come: 0/255 and colour-coded masks, mask names that differ from the image's, region masks,
TIFF and GIF files, EXIF orientation. Each is imported through the folder source as a user would configure it,
and what validate and training see is checked against what was written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.conftest import make_config
from visionflow.config import BuiltinConfig, Config
from visionflow.data import builtin
from visionflow.data.dataset import DecodedCache
from visionflow.errors import DataValidationError, SourceError
from visionflow.handoffs import AcceptedManifest, DatasetInfo, Manifest, ValidationSummary
from visionflow.stages import balance, prepare, train, validate

SPLITS = {"train": 6, "val": 3}


def binary_sample(index: int) -> tuple[np.ndarray, np.ndarray]:
    """A builtin image and its mask reduced to background / shape (class 0 / 1)."""
    image, mask = builtin.generate_sample(index, BuiltinConfig(image_size=64, seed=5), has_rare=False)
    return image, ((mask != 0) & (mask != builtin.IGNORE_INDEX)).astype(np.uint8)


def folder_params(root: Path, **extra: Any) -> dict[str, Any]:
    splits = {s: {"images": f"{s}/img", "masks": f"{s}/gt"} for s in SPLITS}
    return {"data.source": "folder", "data.root": str(root), "data.splits": splits, "train.epochs": 1,
            "train.batch_size": 4, **extra}  # fmt: skip


def write_binary_set(root: Path, with_regions: bool = True) -> dict[str, np.ndarray]:
    """``{id}.jpg`` images, ``{id}_label.png`` masks stored as 0/255, ``{id}_roi.png`` regions whose right quarter
    is zero. Returns each id's mask as written (0/255)."""
    written = {}
    index = 0
    for split, count in SPLITS.items():
        for folder in ("img", "gt", "roi"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            image, labels = binary_sample(index)
            sample = f"{split}{index:02d}"
            Image.fromarray(image).save(root / split / "img" / f"{sample}.jpg", quality=95)
            stored = labels * 255
            Image.fromarray(stored).save(root / split / "gt" / f"{sample}_label.png")
            if with_regions:
                region = np.full(labels.shape, 255, np.uint8)
                region[:, 48:] = 0
                Image.fromarray(region).save(root / split / "roi" / f"{sample}_roi.png")
            written[sample] = stored
            index += 1
    return written


BINARY = {
    "data.classes": ["background", "shape"],
    "data.names": {"image": "{id}.jpg", "mask": "{id}_label.png", "region": "{id}_roi"},
    "data.masks.values": {0: "background", 255: "shape"},
}


def test_binary_masks_named_apart_with_regions_import_and_train(workdir: Path) -> None:
    root = workdir / "binary"
    written = write_binary_set(root)
    splits = {s: {"images": f"{s}/img", "masks": f"{s}/gt", "regions": f"{s}/roi"} for s in SPLITS}
    config = make_config(folder_params(root, **BINARY) | {"data.splits": splits})
    manifest = prepare.run(config).rows.set_index("id")
    assert sorted(manifest.index) == sorted(written), "ids are the shared part of the names"
    assert manifest["region_path"].str.endswith("_roi.png").all() and manifest["region_sha256"].notna().all()
    for sample, stored in written.items():
        row = manifest.loc[sample]
        kept = stored[:, :48]  # the region's zero quarter is ignored
        assert row["px_1"] == int((kept == 255).sum()) and row["px_0"] == int((kept == 0).sum())
        assert row["px_ignore"] == 64 * 16 and row["px_invalid"] == 0
    assert validate.run(config).success
    info = DatasetInfo.read(config.paths)
    rows = AcceptedManifest.read(config.paths).split("train")
    cache = DecodedCache.open(rows, config.paths.cache, info)
    first = written[rows["id"][0]]
    expected = np.where(first == 255, 1, 0)
    expected[:, 48:] = info.ignore_index
    assert np.array_equal(cache.mask(0), expected), "training sees class ids, region pixels ignored"
    balance.run(config)
    trained = train.run(config, resume="never")
    assert trained.classes == ("background", "shape") and trained.epoch == 1


def test_a_missing_region_mask_is_reported_with_its_file(workdir: Path) -> None:
    root = workdir / "binary"
    write_binary_set(root)
    (root / "train" / "roi" / "train01_roi.png").unlink()
    splits = {s: {"images": f"{s}/img", "masks": f"{s}/gt", "regions": f"{s}/roi"} for s in SPLITS}
    config = make_config(folder_params(root, **BINARY) | {"data.splits": splits})
    manifest = prepare.run(config).rows.set_index("id")
    assert manifest.loc["train01", "mask_error"] == "no region mask for this image"
    with pytest.raises(DataValidationError, match=r"train01\.jpg"):
        validate.run(config)
    assert failures_of(config, "train01.jpg") == {"mask_decodes": "mask_error=no region mask for this image"}


def failures_of(config: Config, sample: str) -> dict[str, str]:
    """validate's failures for one file, by check: the value it found (as summary.json and the report show it)."""
    return {f.check: f.value for f in ValidationSummary.read(config.paths).failures if sample in f.file}


def test_a_stored_value_missing_from_the_table_is_named_by_validate(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = workdir / "binary"
    written = write_binary_set(root, with_regions=False)
    odd = written["train02"].copy()
    odd[:4, :4] = 128
    Image.fromarray(odd).save(root / "train" / "gt" / "train02_label.png")
    config = make_config(folder_params(root, **BINARY))
    row = prepare.run(config).rows.set_index("id").loc["train02"]
    assert row["invalid_values"] == "128" and row["px_invalid"] == 16
    with pytest.raises(DataValidationError, match=r"1 file\(s\) failed \(.*train02\.jpg\)"):
        validate.run(config)
    assert failures_of(config, "train02.jpg") == {"mask_values": "invalid_values=128"}
    assert "invalid_values=128" in capsys.readouterr().out


PALETTE = {"#000000": "background", "200,30,30": "shape"}


def write_colour_set(root: Path, stray: tuple[int, int, int] | None = None) -> dict[str, np.ndarray]:
    """CamVid-style folders whose masks are RGB colour codes; ``stray`` paints one corner of train00 in a colour
    that is not in the palette."""
    written = {}
    index = 0
    for split, count in SPLITS.items():
        for _ in range(count):
            image, labels = binary_sample(index)
            sample = f"{split}{index:02d}"
            colour = np.zeros((*labels.shape, 3), np.uint8)
            colour[labels == 1] = (200, 30, 30)
            if stray is not None and sample == "train00":
                colour[:3, :3] = stray
            (root / split / "img").mkdir(parents=True, exist_ok=True)
            (root / split / "gt").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / split / "img" / f"{sample}.png")
            Image.fromarray(colour).save(root / split / "gt" / f"{sample}.png")
            written[sample] = labels
            index += 1
    return written


def test_colour_coded_masks_import_and_train(workdir: Path) -> None:
    root = workdir / "colour"
    written = write_colour_set(root)
    config = make_config(folder_params(root, **{"data.classes": ["background", "shape"], "data.masks.colors": PALETTE}))
    manifest = prepare.run(config).rows.set_index("id")
    for sample, labels in written.items():
        assert manifest.loc[sample, "px_1"] == int(labels.sum()) and manifest.loc[sample, "px_invalid"] == 0
    assert validate.run(config).success
    assert DatasetInfo.read(config.paths).masks.table == (("#000000", 0), ("#c81e1e", 1))
    balance.run(config)
    assert train.run(config, resume="never").epoch == 1


def test_an_unmapped_colour_is_named_with_its_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = workdir / "colour"
    write_colour_set(root, stray=(255, 0, 255))
    config = make_config(folder_params(root, **{"data.classes": ["background", "shape"], "data.masks.colors": PALETTE}))
    prepare.run(config)
    with pytest.raises(DataValidationError, match=r"train00\.png"):
        validate.run(config)
    assert failures_of(config, "train00.png") == {"mask_values": "invalid_values=#ff00ff"}
    console = capsys.readouterr().out
    assert "train00.png" in console and "#ff00ff" in console


def test_a_colour_mask_without_a_palette_says_how_to_map_it(workdir: Path) -> None:
    root = workdir / "colour"
    write_colour_set(root)
    config = make_config(folder_params(root, **{"data.classes": ["background", "shape"]}))
    error = prepare.run(config).rows["mask_error"].dropna()
    assert len(error) == 9 and error.str.contains("data.masks.colors").all()


def test_a_table_entry_naming_no_class_is_a_source_error(workdir: Path) -> None:
    root = workdir / "colour"
    write_colour_set(root)
    params = folder_params(root, **{"data.classes": ["background", "shape"], "data.masks.colors": {"#000000": "sky"}})
    with pytest.raises(SourceError, match="'sky' is neither a class"):
        prepare.run(make_config(params))


def test_tiff_and_gif_images_and_masks_decode(workdir: Path) -> None:
    root = workdir / "formats"
    written = {}
    for index, (split, suffix) in enumerate([("train", ".tif"), ("train", ".gif"), ("val", ".tiff"), ("val", ".gif")]):
        image, labels = binary_sample(index)
        for folder in ("img", "gt"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / split / "img" / f"s{index}{suffix}")
        Image.fromarray(labels).save(root / split / "gt" / f"s{index}{suffix}")
        written[f"s{index}"] = labels
    config = make_config(folder_params(root, **{"data.classes": ["background", "shape"]}))
    manifest = prepare.run(config).rows.set_index("id")
    assert manifest["image_error"].isna().all() and manifest["mask_error"].isna().all()
    for sample, labels in written.items():
        assert manifest.loc[sample, "px_1"] == int(labels.sum())
    assert validate.run(config).success


def rotated_jpeg(path: Path, image: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(image).save(path, quality=95, exif=exif)


def write_oriented_set(root: Path) -> Path:
    """CamVid layout, 48x64 frames; train00 is stored sideways with EXIF orientation 6 (shown rotated 90 degrees
    clockwise), its mask drawn on the upright (64x48) picture."""
    for index in range(6):
        split = "train" if index < 4 else "val"
        image, labels = binary_sample(index)
        image, labels = image[:48], labels[:48]
        for folder in (split, f"{split}annot"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        if index == 0:
            rotated_jpeg(root / split / "frame00.jpg", image, 6)
            labels = np.rot90(labels, k=-1)
        else:
            Image.fromarray(image).save(root / split / f"frame{index:02d}.png")
        Image.fromarray(np.ascontiguousarray(labels)).save(root / f"{split}annot" / f"frame{index:02d}.png")
    return root / "train" / "frame00.jpg"


def oriented_params(root: Path, **extra: Any) -> dict[str, Any]:
    return {"data.source": "folder", "data.root": str(root), "data.preset": "camvid",
            "data.classes": ["background", "shape"], "data.ignore_index": 255, **extra}  # fmt: skip


def test_an_exif_rotated_image_is_rejected_with_its_reason(workdir: Path) -> None:
    root = workdir / "oriented"
    write_oriented_set(root)
    config = make_config(oriented_params(root))
    manifest = prepare.run(config).rows.set_index("id")
    assert manifest.loc["frame00", "orientation"] == 6 and (manifest.drop(index="frame00")["orientation"] == 1).all()
    with pytest.raises(DataValidationError, match=r"frame00\.jpg"):
        validate.run(config)
    found = failures_of(config, "frame00.jpg")
    assert found["exif_orientation"] == "orientation=6", found
    assert "mask_width" in found, "the mask was drawn on the upright picture, so it does not fit the stored one"


def test_an_exif_rotated_image_is_turned_upright_when_asked(workdir: Path) -> None:
    root = workdir / "oriented"
    path = write_oriented_set(root)
    config = make_config(oriented_params(root, **{"validate.exif_orientation": "apply"}))
    prepare.run(config)
    summary = validate.run(config)
    assert summary.success and summary.accepted == 6
    assert [c.failing for c in summary.checks if c.check == "exif_orientation"] == [1], "reported as a warning"
    rows = AcceptedManifest.read(config.paths).split("train").set_index("id")
    assert tuple(rows.loc["frame00", ["width", "height"]]) == (48, 64), "the upright size"
    cache = DecodedCache.open(rows.reset_index(), config.paths.cache, DatasetInfo.read(config.paths))
    with Image.open(path) as stored:
        shown = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"))
    first = list(rows.index).index("frame00")
    assert np.array_equal(cache.image(first), shown), "the pixels as a viewer shows them"
    assert Manifest.read(config.paths).rows.set_index("id").loc["frame00", "orientation"] == 6


def test_a_file_the_name_template_does_not_match_is_reported_not_skipped(workdir: Path) -> None:
    root = workdir / "binary"
    write_binary_set(root, with_regions=False)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / "train" / "gt" / "notes.png")
    config = make_config(folder_params(root, **BINARY))
    manifest = prepare.run(config).rows.set_index("id")
    assert manifest.loc["notes", "image_error"] == "no image for this mask"


def write_train_test_set(root: Path, train_ids: range, test_ids: range) -> None:
    """A DRIVE-like folder: train and test only, the split in every file name (``{id}_training.tif`` in train,
    ``{id}_test.tif`` in test), GIF masks ``{id}_manual1.gif`` of class ids."""
    for split, ids, kind in (("training", train_ids, "training"), ("test", test_ids, "test")):
        for folder in ("images", "1st_manual"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for index in ids:
            image, labels = binary_sample(index)
            Image.fromarray(image).save(root / split / "images" / f"{index:02d}_{kind}.tif")
            Image.fromarray(labels).save(root / split / "1st_manual" / f"{index:02d}_manual1.gif")


def train_test_params(root: Path) -> dict[str, Any]:
    splits = {s: {"images": f"{folder}/images", "masks": f"{folder}/1st_manual"}
              for s, folder in (("train", "training"), ("test", "test"))}  # fmt: skip
    names = {s: {"image": f"{{id}}_{kind}.tif", "mask": "{id}_manual1.gif"}
             for s, kind in (("train", "training"), ("test", "test"))}  # fmt: skip
    return {"data.source": "folder", "data.root": str(root), "data.splits": splits, "data.names": names,
            "data.classes": ["background", "vessel"], "data.val_split": {"share": 0.25, "by": "image"}}  # fmt: skip


def test_a_train_and_test_folder_with_split_names_imports_with_val_carved(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = workdir / "drive"
    write_train_test_set(root, range(20, 36), range(1, 5))
    config = make_config(train_test_params(root))
    first = prepare.run(config).rows.set_index("id")
    assert first["mask_error"].isna().all() and first["image_error"].isna().all(), "names per split pair the files"
    per_split = first["split"].value_counts().to_dict()
    assert per_split["test"] == 4 and per_split["val"] >= 1 and per_split["train"] + per_split["val"] == 16
    assert set(first.loc[first["split"] == "test"].index) == {"01", "02", "03", "04"}, "test is never carved"
    out = capsys.readouterr().out
    assert f"{per_split['val']} images to val" in out and "images holding each class, train / val" in out
    summary = validate.run(config)
    assert summary.success and config.validate_.required_splits == ["train", "val"]
    # a new delivery: one more train image; every earlier image stays in its split
    write_train_test_set(root, range(36, 37), range(0))
    second = prepare.run(config).rows.set_index("id")
    assert len(second) == 21 and second.loc[first.index, "split"].equals(first["split"])


def test_names_per_split_must_cover_every_split(workdir: Path) -> None:
    root = workdir / "drive"
    write_train_test_set(root, range(20, 24), range(1, 3))
    params = train_test_params(root)
    params["data.names"] = {"train": params["data.names"]["train"]}
    with pytest.raises(SourceError, match=r"data.names has no entry for split 'test'"):
        prepare.run(make_config(params))
