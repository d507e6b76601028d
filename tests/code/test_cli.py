from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO
from visionflow import errors
from visionflow.cli import app
from visionflow.stages import STAGE_NAMES

runner = CliRunner()


def test_every_stage_is_a_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in STAGE_NAMES:
        assert name in result.output


def test_bad_params_fail_with_one_clear_line(workdir: Path) -> None:
    (workdir / "params.yaml").write_text("train:\n  epochz: 3\n")
    result = runner.invoke(app, ["train"])
    assert result.exit_code == errors.ConfigError.exit_code == 5
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: train: params.yaml: unknown key 'train.epochz'")
    assert "Traceback" not in result.output


def test_missing_upstream_output_names_the_stage_to_run(workdir: Path) -> None:
    (workdir / "params.yaml").write_text("{}\n")
    result = runner.invoke(app, ["balance"])
    assert result.exit_code == errors.MissingInput.exit_code == 6
    assert "data/prepared/dataset.json: dataset info not found; run `dvc repro prepare`" in result.output


def test_an_unexpected_error_shows_its_traceback_and_exits_as_a_crash(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from visionflow.stages import prepare

    def explode(config: object) -> None:
        raise RuntimeError("CUDA out of memory (injected)")

    (workdir / "params.yaml").write_text("{}\n")
    monkeypatch.setattr(prepare, "run", explode)
    result = runner.invoke(app, ["prepare"])
    assert result.exit_code == errors.CRASH == 70
    assert "Traceback (most recent call last)" in result.output and "in explode" in result.output
    assert "crash: prepare: RuntimeError: CUDA out of memory (injected)" in result.output


def test_every_expected_error_has_a_code_in_the_table_and_the_docs_show_the_table() -> None:
    table = {entry.code: entry for entry in errors.EXIT_CODES}
    classes = [errors.VisionflowError, *_subclasses(errors.VisionflowError)]
    for cls in classes[1:]:
        assert cls.exit_code in table, f"{cls.__name__} exits {cls.exit_code}, which EXIT_CODES does not list"
    page = (REPO / "docs" / "concepts.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \| [^|]+ \| (yes|no) \|$", page, re.M)
    shown = {int(code): (name.strip(), retried == "yes") for code, name, retried in rows}
    assert shown == {code: (entry.name, entry.retried) for code, entry in table.items()}


def _subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]


@pytest.mark.parametrize(
    ("code", "retried"),
    [(4, False), (5, False), (6, False), (70, True), (75, True), (1, True), (-9, True), (137, True)],
)
def test_which_exit_codes_the_flows_retry(code: int, retried: bool) -> None:
    assert errors.retried(code) is retried
