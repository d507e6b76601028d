from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import REPO, folder_params, make_config, write_pair
from visionflow.config import BuiltinConfig, Config
from visionflow.data import builtin
from visionflow.errors import ConfigError, DataValidationError
from visionflow.handoffs import CheckOutcome, DatasetInfo, DriftRow, Failure, Manifest, ValidationSummary
from visionflow.stages import prepare, validate
from visionflow.validation import features, report
from visionflow.validation.checks import CATALOGUE, FRAMES, INDEX, Between, check_names, checks


def folder_config(root: Path) -> Config:
    return make_config(folder_params(root))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def errors(failures: list[dict[str, str]]) -> list[dict[str, str]]:
    """The error-severity failures of summary.json (tiny val splits also draw the classes_in_val warning)."""
    return [f for f in failures if f["severity"] == "error"]


def prepare_and_validate(config: Config) -> ValidationSummary:
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
    assert errors(failures) == [
        {
            "file": "cam/train/frame_002.png",
            "check": "mask_values",
            "severity": "error",
            "value": "invalid_values=42",
            "expected": "mask values are class ids or the ignore index (or in data.masks)",
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
    (failure,) = errors(json.loads(config.paths.validation_summary.read_text())["failures"])
    assert failure["check"] == "exact_duplicate" and "cam/train/frame_000.png" in failure["value"]


def test_same_name_in_two_splits(workdir: Path, camvid_like: Callable[..., Path]) -> None:
    root = camvid_like(workdir / "cam", 4, 2)
    image, mask = builtin.generate_sample(99, BuiltinConfig(seed=11), has_rare=False)
    write_pair(root, ("train", "trainannot"), "frame_005.png", image, mask)  # another picture, the same name
    config = folder_config(root)
    with pytest.raises(DataValidationError):
        prepare_and_validate(config)
    checks = {f["check"] for f in errors(json.loads(config.paths.validation_summary.read_text())["failures"])}
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
    drifted = {d.statistic: d for d in second.drifting}
    assert "brightness_mean" in drifted
    assert drifted["brightness_mean"].change < -20
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


def test_a_class_of_train_that_val_lacks_is_named_as_a_warning(workdir: Path, camvid_like: Callable[..., Path]) -> None:
    root = camvid_like(workdir / "cam", 8, 3)
    for folder in ("val", "valannot"):
        (root / folder / "frame_008.png").unlink()  # val's only picture of a star (and of a disc)
    result = prepare_and_validate(folder_config(root))
    assert result.success
    missing = {f.file: f.value for f in result.failures if f.check == "classes_in_val"}
    assert missing == {"disc": "train_images=3, val_images=0", "star": "train_images=2, val_images=0"}


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
    with pytest.raises(ConfigError, match=r"no_such_check; valid checks: inside_root, .*class_share, drift$"):
        validate.run(config)


# ---------------------------------------------------------------------------------------------------------------
# the one-line error


def test_many_failing_files_are_counted_and_the_first_few_named(
    workdir: Path, camvid_like: Callable[..., Path]
) -> None:
    root = camvid_like(workdir / "cam", 8, 4)
    broken = [root / "train" / f"frame_00{i}.png" for i in (1, 2, 3, 5, 6)]
    broken += [root / "val" / "frame_009.png", root / "val" / "frame_010.png"]
    for path in broken:
        truncate(path)
    config = folder_config(root)
    with pytest.raises(DataValidationError) as err:
        prepare_and_validate(config)
    files = sorted(path.relative_to(workdir).as_posix() for path in broken)
    docs = config.paths.data_docs / "index.html"
    assert str(err.value) == (
        f"data validation failed: 7 file(s) failed ({', '.join(files[:5])} and 2 more); "
        f"see {config.paths.validation_report} and {docs}"
    )
    summary = json.loads(config.paths.validation_summary.read_text())
    assert sorted(f["file"] for f in summary["failures"]) == files, "the summary keeps every file"
    report_md = config.paths.validation_report.read_text()
    assert all(f"`{file}`" in report_md for file in files), "the report lists every file"
    page = config.paths.validation_page.read_text()
    assert all(f"<code>{file}</code>" in page for file in files) and "Data validation FAILED" in page


def failure(file: str, check: str) -> Failure:
    return Failure(file, check, "error", "", "")


def test_failure_message_names_five_of_each_and_counts_the_rest(tiny_config: Config) -> None:
    catalogue = checks(tiny_config)
    blocking = [failure(f"data/train/img_{i:02d}.png", "image_decodes") for i in range(37, 0, -1)]
    blocking += [failure(name, "classes_in_train") for name in ("c1", "c2", "c3", "c4", "c5", "c6", "c7")]
    blocking += [failure("val", "splits_not_empty")]
    message = report.failure_message(blocking, catalogue, Path("r.md"), Path("docs/index.html"))
    first = ", ".join(f"data/train/img_{i:02d}.png" for i in range(1, 6))
    assert message == (
        f"data validation failed: 37 file(s) failed ({first} and 32 more); "
        "classes_in_train failed for c1, c2, c3, c4, c5 and 2 more; splits_not_empty failed for val; "
        "see r.md and docs/index.html"
    )
    assert "img_06" not in message and "\n" not in message


# ---------------------------------------------------------------------------------------------------------------
# the catalogue


def frames_of(config: Config) -> dict[str, pd.DataFrame]:
    """Each frame as the stage builds it, from a prepared manifest (the drift table against itself, so not empty)."""
    prepare.run(config)
    manifest, info = Manifest.read(config.paths), DatasetInfo.read(config.paths)
    rows = features.row_features(manifest.rows, len(info.classes), config.validate_.near_duplicate_distance)
    current = features.dataset_statistics(rows, info.classes)
    drift = features.drift_table(current, current, config.validate_.drift.model_dump())
    assert len(drift), "a drift table with rows"
    return {
        "rows": rows,
        "splits": features.split_table(rows, config.validate_.required_splits),
        "classes": features.class_table(rows, info.classes),
        "drift": drift,
    }


def test_every_check_reads_columns_its_frame_has(tiny_config: Config) -> None:
    frames = frames_of(tiny_config)
    assert set(frames) == set(FRAMES)
    assert all(INDEX[name] in frame.columns for name, frame in frames.items()), "each frame has its index column"
    missing = {
        spec.name: sorted(set(spec.reads) - set(frames[spec.frame].columns))
        for spec in CATALOGUE
        if not set(spec.reads) <= set(frames[spec.frame].columns)
    }
    assert missing == {}
    assert len(check_names()) == len(set(check_names())) == len(CATALOGUE), "names are unique"
    assert set(features.drift_table(None, None, {}).columns) == set(frames["drift"].columns), "empty drift too"


SEGMENTATION_ONLY = {"mask_decodes", "mask_bit_depth", "mask_width", "mask_height", "mask_values", "mask_labelled"}


def classification_config(**extra: object) -> Config:
    return make_config(
        {"project.task": "classification", "train.loss": {"ce": 1}, "data.source": "digits", "data.root": "digits.py"}
        | extra
    )


def test_checks_take_their_settings_and_task_from_params() -> None:
    config = make_config(
        {
            "validate.min_image_size": 32,
            "validate.near_duplicate_distance": 5,
            "validate.class_share": {"min": 0.01, "max": 0.6},
            "validate.channels": "reject",
            "validate.severity": {"near_duplicate": "error", "class_share": "error"},
        }
    )
    by_name = {c.name: c for c in checks(config)}
    assert by_name["min_size"].rule == Between("min_side", 32, None)
    assert by_name["min_size"].expected == "width and height at least 32 px"
    assert by_name["class_share"].rule == Between("train_share", 0.01, 0.6)
    assert by_name["class_share"].expected == "train pixel share within [0.01, 0.6]"
    assert "distance <= 5" in by_name["near_duplicate_leak"].expected
    severities = {name: by_name[name].severity for name in ("rgb", "mask_bit_depth", "near_duplicate", "drift")}
    assert severities == {"rgb": "error", "mask_bit_depth": "warning", "near_duplicate": "error", "drift": "warning"}
    assert by_name["class_share"].severity == "error", "an override wins over the default"
    assert set(by_name) == set(check_names()) - {"label_known"}
    classification = {c.name for c in checks(classification_config())}
    assert classification == set(check_names()) - SEGMENTATION_ONLY


def test_unknown_severity_override_is_a_config_error_naming_valid_checks() -> None:
    config = make_config({"validate.severity": {"no_such_check": "error", "nope": "warning"}})
    with pytest.raises(ConfigError) as err:
        checks(config)
    message = str(err.value)
    assert "unknown check(s) no_such_check, nope" in message and err.value.exit_code == 5
    assert message.endswith(f"valid checks: {', '.join(check_names())}")


def test_the_docs_check_table_lists_every_check_with_its_default_severity() -> None:
    """The documentation's table of checks is written by hand: it must name each check of the catalogue, once,
    with the severity it has under the shipped params.yaml."""
    page = (REPO / "docs" / "validation.md").read_text(encoding="utf-8")
    section = page.split("# Validation: nothing lost", 1)[1].split("\n\n", 3)[2]
    listed: dict[str, str] = {}
    for line in section.splitlines()[2:]:
        names, *_, defaults = (cell.strip() for cell in line.strip("|").split("|"))
        severities = [d.strip() for d in defaults.split("/")]
        for i, name in enumerate(n.strip() for n in names.split(",")):
            assert name not in listed, f"{name} is listed twice"
            listed[name] = severities[min(i, len(severities) - 1)]
    assert set(listed) == set(check_names()), sorted(set(listed) ^ set(check_names()))
    shipped = {c.name: c.severity for t in ("segmentation", "classification") for c in checks(_with_task(t))}
    assert listed == shipped


def _with_task(task: str) -> Config:
    source = "builtin" if task == "segmentation" else "digits"
    return make_config({"project.task": task, "data.source": source, "train.loss": {"ce": 1.0}})


def test_only_the_adapter_imports_great_expectations() -> None:
    parts = "visionflow.validation.checks, visionflow.validation.features, visionflow.validation.report"
    code = f"import sys, {parts}, visionflow.stages.validate; sys.exit('great_expectations' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    source = "\n".join(
        path.read_text(encoding="utf-8")
        for path in Path(features.__file__).parent.glob("*.py")
        if path.name != "expectations.py"
    )
    assert "great_expectations" not in source.replace("visionflow.validation.expectations", "")


# ---------------------------------------------------------------------------------------------------------------
# the reports


def hand_made_summary() -> ValidationSummary:
    return ValidationSummary(
        success=False,
        mode="fail",
        inputs=10,
        accepted=8,
        quarantined=2,
        checks=(
            CheckOutcome("inside_root", "error", True, 0),
            CheckOutcome("image_decodes", "error", False, 2),
            CheckOutcome("near_duplicate", "warning", False, 1),
            CheckOutcome("drift", "warning", None, 0, "nothing to check"),
        ),
        failures=(
            Failure("d/train/a.png", "image_decodes", "error", "image_error=truncated", "the image decodes"),
            Failure("d/train/b.png", "image_decodes", "error", "image_error=empty file", "the image decodes"),
            Failure("d/val/c.png", "near_duplicate", "warning", "near_duplicate_of=d/val/e.png", "no near copy"),
        ),
        drift=(
            DriftRow("brightness_mean", 40.0, 80.0, -40.0, 20.0, True),
            DriftRow("width_mean", 64.0, 64.0, 0.0, 0.1, False),
        ),
        reference="12 images",
    )


def console_cells(text: str) -> list[tuple[str, ...]]:
    return [tuple(re.split(r"\s{2,}", line.strip())) for line in text.splitlines() if line.startswith("  ")]


def markdown_cells(text: str) -> list[tuple[str, ...]]:
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    return [tuple(cell.strip().strip("`") for cell in row.strip("|").split(" | ")) for row in rows]


def html_cells(text: str) -> list[tuple[str, ...]]:
    rows = re.findall(r"<tr>(.*?)</tr>", text)
    return [tuple(html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r))
            for r in rows]  # fmt: skip


def test_console_markdown_and_html_show_the_same_rows() -> None:
    summary = hand_made_summary()
    shown = report.tables(summary, max_listed=2)
    expected = [row for table in shown for row in (table.header, *table.rows)]
    assert ("image_decodes", "error", "FAIL", "2") in expected and ("drift", "warning", "n/a", "0") in expected
    assert ("brightness_mean", "80.0", "40.0", "-40.0", "20.0") in expected
    console, markdown, page = report.console(summary, 2), report.markdown(summary, 2), report.html(summary, 2)
    assert markdown_cells(markdown) == expected == html_cells(page)
    assert [cells for cells in console_cells(console) if len(cells) > 1] == expected
    assert not re.search(r"(src|href)=", page), "one self-contained page: nothing loaded from elsewhere"
    for text in (console, markdown, html.unescape(page)):
        assert "10 inputs = 8 accepted + 2 rejected" in text and "and 1 more in the JSON summary" in text
        assert "d/val/c.png" not in text and "width_mean" not in text, "only max_listed failures, only drifting rows"


def test_both_reports_render_the_one_set_of_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    only = report.Table("Only table", ("one", "two"), (("cell-a", "cell-b"),))
    monkeypatch.setattr(report, "tables", lambda summary, max_listed: [only])
    console, markdown = report.console(hand_made_summary(), 20), report.markdown(hand_made_summary(), 20)
    assert console_cells(console) == markdown_cells(markdown) == [("one", "two"), ("cell-a", "cell-b")]
    assert "inside_root" not in console and "inside_root" not in markdown
