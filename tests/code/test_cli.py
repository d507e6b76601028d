from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

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
    assert result.exit_code == 1
    assert "unknown key 'train.epochz'" in result.output and "Traceback" not in result.output


def test_missing_upstream_output_names_the_stage_to_run(workdir: Path) -> None:
    (workdir / "params.yaml").write_text("{}\n")
    result = runner.invoke(app, ["balance"])
    assert result.exit_code == 1
    assert "visionflow prepare" in result.output
