from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_config, write_pair
from visionflow.config import Config
from visionflow.data.groups import assign_groups
from visionflow.data.manifest import build_manifest
from visionflow.data.sources import PRESETS, collect_samples
from visionflow.errors import SourceError
from visionflow.handoffs import Manifest, count_columns, usable


def camvid_config(root: Path, **extra: object) -> Config:
    for folder in ("train", "trainannot", "val", "valannot"):
        if root.exists():
            (root / folder).mkdir(exist_ok=True)
    return make_config({"data.source": "folder", "data.root": str(root), "data.preset": "camvid", **extra})


def test_builtin_source_writes_files_and_manifest(tiny_config: Config) -> None:
    samples, info = collect_samples(tiny_config)
    assert len(samples) == 24 and info.classes[0] == "background" and info.ignore_index == 255
    manifest = build_manifest(samples, info).rows
    assert usable(manifest).all()
    assert manifest["dhash"].str.len().eq(64).all() and manifest["bits"].eq(8).all()
    assert (manifest[["width", "height"]] == 64).all().all()
    assert (manifest["channels"] == 3).all()
    assert manifest[count_columns(len(info.classes))].sum(axis=1).eq(64 * 64).all()
    assert manifest["sha256"].str.len().eq(64).all() and manifest["mask_sha256"].str.len().eq(64).all()
    assert manifest["mask_sha256"].nunique() > 1, "each mask hashed, not one value for all"
    assert set(manifest["split"]) == {"train", "val"}


def test_folder_source_with_camvid_preset(workdir: Path, camvid_like: Callable[..., Path]) -> None:
    root = camvid_like(workdir / "cam", 6, 3)
    samples, info = collect_samples(camvid_config(root))
    assert info.classes == PRESETS["camvid"].classes and info.ignore_index == 11
    assert sorted({s.split for s in samples}) == ["train", "val"], "the optional test split is skipped"
    assert all(s.image.stem == s.mask.stem for s in samples)


def test_counts_match_the_mask(workdir: Path) -> None:
    mask = np.zeros((32, 32), np.uint8)
    mask[:8] = 3
    mask[8:10] = 11  # ignore
    mask[10:11] = 200  # out of range
    write_pair(workdir, ("train", "trainannot"), "a.png", np.zeros((32, 32, 3), np.uint8), mask)
    samples, info = collect_samples(camvid_config(workdir))
    row = build_manifest(samples, info).rows.iloc[0]
    assert row["px_3"] == 8 * 32 and row["px_0"] == (32 - 11) * 32
    assert row["px_ignore"] == 64 and row["px_invalid"] == 32 and row["invalid_values"] == "200"


def test_unreadable_and_unmatched_files_become_rows(workdir: Path) -> None:
    good = np.zeros((32, 32, 3), np.uint8)
    write_pair(workdir, ("train", "trainannot"), "ok.png", good, np.zeros((32, 32), np.uint8))
    Image.fromarray(good).save(workdir / "train" / "lonely.png")
    (workdir / "trainannot" / "orphan.png").write_bytes(Image.new("L", (4, 4)).tobytes())
    Image.fromarray(good).save(workdir / "train" / "cut.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(workdir / "trainannot" / "cut.png")
    data = (workdir / "train" / "cut.png").read_bytes()
    (workdir / "train" / "cut.png").write_bytes(data[: len(data) // 2])
    samples, info = collect_samples(camvid_config(workdir))
    manifest = build_manifest(samples, info).rows.set_index("id")
    assert len(manifest) == 4, "every file is accounted for"
    assert usable(manifest).tolist() == [id_ == "ok" for id_ in manifest.index]
    assert "no mask" in manifest.loc["lonely", "mask_error"]
    assert "no image" in manifest.loc["orphan", "image_error"]
    assert "does not decode" in manifest.loc["cut", "image_error"]


def test_manifest_round_trip(tiny_config: Config, workdir: Path) -> None:
    samples, info = collect_samples(tiny_config)
    manifest = build_manifest(samples, info)
    manifest.write(tiny_config.paths)
    again = Manifest.read(tiny_config.paths).rows
    assert again["id"].tolist() == manifest.rows["id"].tolist()
    assert again["sha256"].tolist() == manifest.rows["sha256"].tolist()
    assert not Path(again["image_path"].iloc[0]).is_absolute(), "paths are relative to the project"


def test_missing_root_and_missing_split_are_clear(workdir: Path) -> None:
    with pytest.raises(SourceError, match="is not a folder"):
        collect_samples(camvid_config(workdir / "nowhere"))
    (workdir / "d" / "imgs").mkdir(parents=True)
    config = make_config(
        {
            "data.source": "folder",
            "data.root": str(workdir / "d"),
            "data.classes": ["a", "b"],
            "data.splits": {
                "train": {"images": "imgs", "masks": "m"},
                "val": {"images": "vimgs", "masks": "vm"},
            },
        }
    )
    with pytest.raises(SourceError, match=r"split 'val'.*vimgs"):
        collect_samples(config)


def test_two_files_with_one_stem_are_an_error(workdir: Path) -> None:
    write_pair(workdir, ("train", "trainannot"), "x.png", np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(workdir / "train" / "x.jpg")
    with pytest.raises(SourceError, match="two files hold the sample 'x'"):
        collect_samples(camvid_config(workdir))


def test_a_csv_group_column_gives_groups_and_an_empty_cell_stands_alone(workdir: Path) -> None:
    root = workdir / "scans"
    root.mkdir()
    table = "image,label,split,patient\na/1.png,x,train,p7\na/2.png,x,train,p7\nb/3.png,y,train,\nc/4.png,y,val,p9\n"
    (root / "labels.csv").write_text(table)
    config = make_config({"project.task": "classification", "train.loss": {"ce": 1}, "data.source": "csv",
                          "data.root": str(root), "data.groups.column": "patient"})  # fmt: skip
    samples, _ = collect_samples(config)
    grouped = {s.id: (s.group, s.group_from) for s in assign_groups(samples, config.data.groups)}
    assert grouped == {"a/1": ("p7", "column"), "a/2": ("p7", "column"), "b/3": ("b/3", "id"), "c/4": ("p9", "column")}
    missing = make_config({"project.task": "classification", "train.loss": {"ce": 1}, "data.source": "csv",
                           "data.root": str(root), "data.groups.column": "site"})  # fmt: skip
    with pytest.raises(SourceError, match=r"no column\(s\) site \(see data.csv, data.groups.column\)"):
        collect_samples(missing)


def test_names_per_split_with_a_preset_must_name_its_splits(workdir: Path) -> None:
    write_pair(workdir, ("train", "trainannot"), "a.png", np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8))
    both = {"image": "{id}", "mask": "{id}"}
    with pytest.raises(SourceError, match=r"data.names names split\(s\) trian; the splits are train, val, test"):
        collect_samples(camvid_config(workdir, **{"data.names": {"train": both, "val": both, "trian": both}}))
    with pytest.raises(SourceError, match=r"data.names has no entry for split 'val'"):
        collect_samples(camvid_config(workdir, **{"data.names": {"train": both}}))
    samples, _ = collect_samples(camvid_config(workdir, **{"data.names": {"train": both, "val": both}}))
    assert [(s.split, s.id) for s in samples] == [("train", "a")], "the optional test split needs no names"
