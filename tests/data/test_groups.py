"""Groups (a video, a patient, a site): recorded by prepare, leakage between splits named by validate, and a val
split carved out of train whole groups at a time, stably."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from tests.conftest import REPO, folder_params, make_config
from visionflow.config import BuiltinConfig, GroupsConfig, ValSplitConfig
from visionflow.data import builtin
from visionflow.data.groups import assign_groups, carve_val, group_in, unit_hash
from visionflow.data.sources import SampleRef
from visionflow.errors import DataValidationError, MissingInput, SourceError
from visionflow.handoffs import Manifest, manifest_columns
from visionflow.stages import prepare, validate

SEQUENCE = r"^(?P<group>[^_]+)_"  # CamVid-style names: <sequence>_<frame>.png


def write_frames(root: Path, names: dict[str, list[str]]) -> Path:
    """CamVid's layout (train/ trainannot/ val/ valannot/) with builtin shapes under the given file names; every
    shape class is in train (folder_params gives the matching classes)."""
    config = BuiltinConfig(image_size=64, seed=3)
    index = 0
    for split, files in names.items():
        for folder in (split, f"{split}annot"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        for name in files:
            image, mask = builtin.generate_sample(index, config, has_rare=index % 4 == 0)
            Image.fromarray(image).save(root / split / name)
            Image.fromarray(mask).save(root / f"{split}annot" / name)
            index += 1
    return root


LEAKY = {
    "train": [f"seqA_{i:03d}.png" for i in range(4)] + ["seqB_004.png", "seqB_005.png", "lonely.png"],
    "val": ["seqA_006.png", "seqC_007.png", "seqC_008.png"],
}


def test_groups_from_a_pattern_land_in_the_manifest_and_unmatched_names_stand_alone(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_frames(workdir / "cam", LEAKY)
    config = make_config(folder_params(root, **{"data.groups.pattern": SEQUENCE}))
    prepare.run(config)
    rows = Manifest.read(config.paths).rows.set_index("id")
    assert rows.loc["seqA_000", "group"] == "seqA" and rows.loc["seqC_008", "group"] == "seqC"
    assert rows.loc["lonely", "group"] == "lonely", "a name the pattern misses is a group of its own, kept"
    assert rows["group_from"].value_counts().to_dict() == {"pattern": 9, "id": 1}
    assert "3 groups over 9 images (train 2, val 2); 1 image(s) matched no group" in capsys.readouterr().out
    summary = validate.run(config)
    unmatched = [f for f in summary.failures if f.check == "group_unmatched"]
    assert [(Path(f.file).name, f.severity) for f in unmatched] == [("lonely.png", "warning")]
    assert next(c for c in summary.checks if c.check == "group_unmatched").failing == 1


def test_without_groups_the_group_checks_have_nothing_to_check(workdir: Path) -> None:
    root = write_frames(workdir / "cam", LEAKY)
    config = make_config(folder_params(root))
    rows = prepare.run(config).rows
    assert rows["group"].isna().all() and rows["group_from"].isna().all()
    outcomes = {c.check: c.success for c in validate.run(config).checks}
    assert outcomes["group_leak"] is None and outcomes["group_unmatched"] is None, "n/a, not a pass"


def test_group_leak_names_the_shared_group_with_its_counts(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_frames(workdir / "cam", LEAKY)
    config = make_config(folder_params(root, **{"data.groups.pattern": SEQUENCE}))
    prepare.run(config)
    summary = validate.run(config)
    assert summary.success, "a warning by default"
    (leak,) = [f for f in summary.failures if f.check == "group_leak"]
    assert (leak.file, leak.severity) == ("val", "warning")
    assert leak.value == "shared_with_train=seqA (4 train images, 1 val)", "seqB and seqC are not shared"
    assert "seqA (4 train images, 1 val)" in capsys.readouterr().out


def test_group_leak_as_an_error_stops_validate(workdir: Path) -> None:
    root = write_frames(workdir / "cam", LEAKY)
    params = {"data.groups.pattern": SEQUENCE, "validate.severity": {"group_leak": "error"}}
    config = make_config(folder_params(root, **params))
    prepare.run(config)
    with pytest.raises(DataValidationError, match=r"group_leak failed for val"):
        validate.run(config)


def test_group_is_the_named_group_or_the_whole_match() -> None:
    assert group_in("0016E5_06390.png", re.compile(SEQUENCE)) == "0016E5"
    assert group_in("patient-07_scan3.tif", re.compile(r"patient-\d+")) == "patient-07"
    assert group_in("notes.png", re.compile(SEQUENCE)) is None


# ---------------------------------------------------------------------------------------------------------------
# real CamVid: val's sequence is one of train's


@pytest.mark.camvid
def test_camvid_val_shares_sequence_0016E5_with_204_train_frames(workdir: Path, camvid_root: Path) -> None:
    """The real folder through prepare and validate, grouped as examples/camvid_sequences.yaml says."""
    config = make_config(yaml.safe_load(_camvid_example()) | {"data.root": str(camvid_root)})
    rows = prepare.run(config).rows
    assert rows.groupby("split")["group"].unique().map(sorted).to_dict() == {
        "train": ["0001TP", "0006R0", "0016E5"],
        "val": ["0016E5"],
    }
    summary = validate.run(config)
    assert summary.success, "a warning by default"
    (leak,) = [f for f in summary.failures if f.check == "group_leak"]
    assert (leak.file, leak.severity) == ("val", "warning")
    assert leak.value == "shared_with_train=0016E5 (204 train images, 101 val)"


def _camvid_example() -> str:
    return (REPO / "examples" / "camvid_sequences.yaml").read_text(encoding="utf-8")


def test_the_camvid_example_groups_by_sequence() -> None:
    overrides = yaml.safe_load(_camvid_example())
    config = make_config(overrides)
    pattern = re.compile(config.data.groups.pattern or "")
    names = {"0001TP_006690.png": "0001TP", "0006R0_f02040.png": "0006R0", "0016E5_06390.png": "0016E5"}
    assert {name: group_in(name, pattern) for name in names} == names


# ---------------------------------------------------------------------------------------------------------------
# a val split carved out of train


def refs(ids: list[str], split: str = "train", group: str | None = None) -> list[SampleRef]:
    return [SampleRef(split, Path(f"{i}.png"), Path(f"{i}_mask.png"), group=group) for i in ids]


def test_carving_moves_whole_groups_and_keeps_earlier_images_where_they_were() -> None:
    spec = ValSplitConfig(share=0.3, by="group", seed=1)
    groups = GroupsConfig(pattern=r"^(?P<group>p\d+)-")
    before = carve_val(assign_groups(refs([f"p{p}-{i}" for p in range(20) for i in range(3)]), groups), spec)
    splits = {ref.id: ref.split for ref in before}
    by_group = pd.DataFrame({"group": [r.group for r in before], "split": [r.split for r in before]})
    assert (by_group.groupby("group")["split"].nunique() == 1).all(), "no group in both splits"
    assert 0 < sum(s == "val" for s in splits.values()) < len(splits)
    grown = refs([f"p{p}-{i}" for p in range(25) for i in range(4)])  # more images of old and new patients
    after = {ref.id: ref.split for ref in carve_val(assign_groups(grown, groups), spec)}
    assert {i: after[i] for i in splits} == splits


def test_a_preset_folder_without_val_gets_one_carved_by_sequence(workdir: Path) -> None:
    frames = [f"seq{s}_{i:03d}.png" for s in "ABCDEFGH" for i in range(3)]
    root = write_frames(workdir / "cam", {"train": frames})  # no val/ folder at all
    params = {"data.groups.pattern": SEQUENCE, "data.val_split": {"share": 0.3, "by": "group", "seed": 0}}
    config = make_config(folder_params(root, **params))
    rows = prepare.run(config).rows
    assert set(rows["split"]) == {"train", "val"}
    assert (rows.groupby("group")["split"].nunique() == 1).all(), "whole sequences move"
    outcomes = {c.check: c.success for c in validate.run(config).checks}
    assert outcomes["group_leak"] is True and outcomes["splits_not_empty"] is True


def test_carving_where_val_exists_is_an_error_naming_the_fix() -> None:
    samples = refs(["a", "b"]) + refs(["c"], split="val")
    with pytest.raises(SourceError, match=r"has a val split \(1 images\); set data.val_split: null"):
        carve_val(samples, ValSplitConfig())


def test_the_hash_is_fixed_by_seed_and_key_alone() -> None:
    values = [unit_hash(0, f"img{i}") for i in range(2000)]
    assert all(0 <= v < 1 for v in values) and 0.45 < sum(v < 0.5 for v in values) / 2000 < 0.55
    assert unit_hash(0, "img7") == values[7] and unit_hash(1, "img7") != values[7]


def test_a_manifest_without_groups_is_of_another_schema(workdir: Path) -> None:
    config = make_config()
    rows = pd.DataFrame({"id": ["a"], "split": ["train"]}).reindex(
        columns=[c for c in manifest_columns(0) if c not in ("group", "group_from")]
    )
    Manifest(rows).write(config.paths)
    with pytest.raises(MissingInput, match=r"manifest of schema without group, group_from.*schema 4.*prepare"):
        Manifest.read(config.paths)
