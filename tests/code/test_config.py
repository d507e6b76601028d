from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from visionflow.config import EVAL_SPLITS, Config, ConfigError, PathsConfig, load_config


def test_repository_params_build_every_section() -> None:
    config = load_config(REPO / "params.yaml")
    assert isinstance(config, Config)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    dumped = config.model_dump(mode="json", by_alias=True)
    assert set(raw) == set(dumped), "params.yaml and the schema list the same sections"
    assert config.data.source == "builtin"
    assert config.model.encoder_weights is None, "no hub here: weights default to none"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_the_key_and_allowed_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "train:\n  epoch: 3\n"))
    message = str(err.value)
    assert "unknown key 'train.epoch'" in message
    assert "epochs" in message and "batch_size" in message
    assert str(tmp_path / "params.yaml") in message


def test_unknown_section_lists_sections(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'trian'.*train"):
        load_config(write(tmp_path, "trian:\n  epochs: 3\n"))


def test_mistyped_value_names_key_and_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "train:\n  epochs: many\n"))
    assert "'train.epochs'" in str(err.value) and "'many'" in str(err.value)


def test_choice_error_lists_allowed_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "data:\n  source: s3\n"))
    assert "'builtin'" in str(err.value) and "'folder'" in str(err.value)


def test_crops_per_image_is_for_the_crop_policy(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="crops_per_image 4 is for policy crop, not 'resize'"):
        load_config(write(tmp_path, "train:\n  input: {size: [64, 64], policy: resize, crops_per_image: 4}\n"))
    spec = load_config(write(tmp_path, "train:\n  input: {size: [64, 64], policy: crop, crops_per_image: 4}\n"))
    assert spec.train.input != "auto" and spec.train.input.crops_per_image == 4


def test_scale_is_for_crops_and_windows_and_reaches_the_eval_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"scale 0\.5 is for policies crop and window, not 'resize'"):
        load_config(write(tmp_path, "train:\n  input: {size: [64, 64], policy: resize, scale: 0.5}\n"))
    with pytest.raises(ConfigError, match="scale"):
        load_config(write(tmp_path, "train:\n  input: {size: [64, 64], policy: crop, scale: 1.5}\n"))
    config = load_config(write(tmp_path, "train:\n  input: {size: [64, 64], policy: crop, scale: 0.5}\n"))
    assert (config.eval_input.policy, config.eval_input.size, config.eval_input.scale) == ("window", (64, 64), 0.5)


def test_folder_source_needs_a_layout(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="preset"):
        load_config(write(tmp_path, "data:\n  source: folder\n  root: somewhere\n"))


def test_missing_file_says_where(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_apply_dotted_keys() -> None:
    config = load_config(REPO / "params.yaml", {"train.epochs": 2, "data.builtin.num_images": 30})
    assert config.train.epochs == 2 and config.data.builtin.num_images == 30


def test_flat_params_are_dotted() -> None:
    flat = load_config(REPO / "params.yaml").flat()
    assert flat["train.epochs"] == load_config(REPO / "params.yaml").train.epochs
    assert "register.model_name" in flat and "validate.min_image_size" in flat


def _dvc_paths() -> set[str]:
    """Every path dvc.yaml names, with ${paths.*} filled in from params.yaml."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    text = (REPO / "dvc.yaml").read_text()
    text = re.sub(r"\$\{paths\.(\w+)\}", lambda m: params["paths"][m.group(1)], text)
    text = text.replace("${data.root}", params["data"]["root"])
    found: set[str] = set()
    for stage in yaml.safe_load(text)["stages"].values():
        for key in ("outs", "metrics", "plots"):
            for item in stage.get(key, []):
                found.add(next(iter(item)) if isinstance(item, dict) else item)
    return found


def test_dvc_yaml_declares_the_files_the_code_writes() -> None:
    """One place per path: dvc.yaml's outputs are exactly the PathsConfig files the stages exchange."""
    paths = PathsConfig()
    written = {
        paths.prepared,
        paths.accepted,
        paths.quarantine,
        paths.validation_report,
        paths.validation_page,
        paths.validation_reference,
        paths.validation_summary,
        paths.data_docs,
        paths.class_weights,
        paths.class_distribution,
        paths.class_distribution_plot,
        paths.sample_weights,
        paths.plan_file,
        paths.plan_report,
        paths.weights,
        paths.checkpoint,
        paths.run_info,
        paths.history,
        paths.metrics,
        paths.headline,
        *(paths.evaluated(split).root for split in EVAL_SPLITS),
        paths.registration,
        paths.decision,
    }
    assert {Path(p) for p in _dvc_paths()} == written


def test_groups_pattern_must_compile_and_name_its_group(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.groups.pattern '\(\?P<group>\[\^_\]\+_' is not a valid regex"):
        load_config(write(tmp_path, "data:\n  groups: {pattern: '(?P<group>[^_]+_'}\n"))
    with pytest.raises(ConfigError, match=r"names the group\(s\) seq but not 'group'"):
        load_config(write(tmp_path, "data:\n  groups: {pattern: '^(?P<seq>[^_]+)_'}\n"))
    config = load_config(write(tmp_path, "data:\n  groups: {pattern: '^[^_]+'}\n"))
    assert config.data.groups.pattern == "^[^_]+" and config.data.groups.configured, "no named group: the match"


def test_groups_column_is_for_the_csv_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.groups.column is for data.source csv .* not 'folder'"):
        load_config(write(tmp_path, "data:\n  source: folder\n  preset: camvid\n  groups: {column: patient}\n"))
    with pytest.raises(ConfigError, match=r"give pattern .* or column .*, not both"):
        load_config(write(tmp_path, "data:\n  source: csv\n  groups: {pattern: x, column: patient}\n"))
    with pytest.raises(ConfigError, match=r"unknown key 'data.groups.patern'; allowed keys here: column, pattern"):
        load_config(write(tmp_path, "data:\n  groups: {patern: x}\n"))
    config = load_config(write(tmp_path, "project: {task: classification}\ntrain: {loss: {ce: 1}}\n"
                                         "data:\n  source: csv\n  groups: {column: patient}\n"))  # fmt: skip
    assert config.data.groups.column == "patient"


def test_names_take_one_form_or_one_per_split(tmp_path: Path) -> None:
    one = load_config(write(tmp_path, "data:\n  names: {image: '{id}.jpg'}\n")).data
    assert one.names_of("train") == one.names_of("test") and one.names_of("val").image == "{id}.jpg"
    splits = "{train: {images: a, masks: b}, test: {images: c, masks: e}}"
    layout = f"data:\n  source: folder\n  root: d\n  splits: {splits}\n"
    per_split = load_config(write(tmp_path, layout + "  names: {train: {image: '{id}_training.tif'}, "
                                  "test: {image: '{id}_test.tif'}}\n")).data  # fmt: skip
    assert per_split.names_of("train").image == "{id}_training.tif" and per_split.names_of("val") is None
    with pytest.raises(ConfigError, match=r"unknown key 'data.names.train.imge'; allowed keys here: image, mask"):
        load_config(write(tmp_path, layout + "  names: {train: {imge: '{id}.tif'}, test: {}}\n"))
    with pytest.raises(ConfigError, match=r"data.names names split\(s\) tset that data.splits lacks"):
        load_config(write(tmp_path, layout + "  names: {train: {image: '{id}.tif'}, tset: {}}\n"))
    with pytest.raises(ConfigError, match=r"'data.names.test': name template 'x'"):
        load_config(write(tmp_path, layout + "  names: {train: {}, test: {mask: x}}\n"))


def test_val_split_defaults_and_bounds(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "data: {}\n")).data.val_split is None, "off unless set"
    spec = load_config(write(tmp_path, "data:\n  val_split: {share: 0.25}\n")).data.val_split
    assert spec is not None and (spec.share, spec.by, spec.seed) == (0.25, "group", 0)
    with pytest.raises(ConfigError, match=r"'data.val_split.by': Input should be 'group' or 'image'"):
        load_config(write(tmp_path, "data:\n  val_split: {by: patient}\n"))
    with pytest.raises(ConfigError, match=r"'data.val_split.share': Input should be less than 1"):
        load_config(write(tmp_path, "data:\n  val_split: {share: 1}\n"))


def test_the_registered_name_comes_from_the_dataset_unless_params_name_it(tmp_path: Path) -> None:
    base = load_config(REPO / "params.yaml")
    assert (base.dataset_name, base.model_name) == ("builtin-shapes", "builtin-shapes-segmenter")
    wires = load_config(REPO / "params.yaml", {"data.builtin.kind": "wires"})
    assert wires.model_name == "builtin-wires-segmenter", "other classes, another name"
    root = tmp_path / "My Roads (2024)"
    folder = {"data.source": "folder", "data.root": str(root / "sub" / ".."), "data.preset": "camvid"}
    assert load_config(REPO / "params.yaml", folder).model_name == "my-roads-2024-segmenter"
    digits = load_config(REPO / "params.yaml", {"project.task": "classification", "data.source": "digits",
                                                "train.loss.dice": 0.0})  # fmt: skip
    assert digits.model_name == "digits-classifier"
    named = load_config(REPO / "params.yaml", folder | {"register.model_name": "roads"})
    assert named.model_name == "roads"
