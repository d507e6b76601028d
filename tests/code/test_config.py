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
        *(paths.evaluated(split).root for split in EVAL_SPLITS),
        paths.registration,
        paths.decision,
    }
    assert {Path(p) for p in _dvc_paths()} == written
