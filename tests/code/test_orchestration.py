"""The orchestration pieces the Prefect flows stand on: the workspace lock, retry classes, sweep plans, summaries."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import make_config
from visionflow.handoffs import CheckOutcome, DriftRow, EvaluationMetrics, GateDecision, TrainingRun, ValidationSummary
from visionflow.orchestration import (
    OWNER_FILE,
    Changes,
    StageFailed,
    StageResult,
    Summary,
    SweepPlan,
    WorkspaceBusy,
    run_summary,
    set_flags,
    workspace_lock,
)
from visionflow.tracking import workspace_root

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from visionflow.orchestration import workspace_lock
    repo = Path(sys.argv[1])
    with workspace_lock(repo, "wait", 5, "holder-process", print):
        (repo / "holding").touch()
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
        (repo / "holding").unlink()  # the last thing before the lock is released
    """
)


def hold_in_another_process(repo: Path, seconds: float) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(repo), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_busy_workspace_is_skipped_with_the_holder_named(tmp_path: Path) -> None:
    holder = hold_in_another_process(tmp_path, 30)
    messages: list[str] = []
    try:
        with workspace_lock(tmp_path, "skip", 60, "second", messages.append) as held:
            assert held is False
    finally:
        holder.kill()
        holder.wait()
    assert "holder-process" in messages[0] and f"pid {holder.pid}" in messages[0] and "skipping" in messages[0]


def test_a_waiting_run_gives_up_after_the_timeout_naming_the_holder(tmp_path: Path) -> None:
    holder = hold_in_another_process(tmp_path, 30)
    try:
        with pytest.raises(WorkspaceBusy, match="holder-process"), workspace_lock(tmp_path, "wait", 0.5, "second"):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_a_waiting_run_goes_on_once_the_holder_finishes(tmp_path: Path) -> None:
    holder = hold_in_another_process(tmp_path, 1.5)
    messages: list[str] = []
    assert (tmp_path / "holding").exists()
    with workspace_lock(tmp_path, "wait", 60, "second", messages.append) as held:
        assert held is True
        assert not (tmp_path / "holding").exists(), "granted only once the holder let go"
        assert json.loads((tmp_path / OWNER_FILE).read_text())["holder"] == "second"
    holder.wait()
    assert "waiting" in messages[0] and "free after" in messages[1]
    assert not (tmp_path / OWNER_FILE).exists(), "the owner record goes with the lock"


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = hold_in_another_process(tmp_path, 60)
    holder.kill()
    holder.wait()
    with workspace_lock(tmp_path, "skip", 0, "next") as held:
        assert held is True


@pytest.mark.parametrize(
    ("exit_code", "headline", "transient"),
    [
        (4, "error: validate: data validation failed: 1 file(s) failed (x.png)", False),  # bad data: never retried
        (5, "error: train: params.yaml: unknown key 'train.epoch'", False),  # bad params: a retry cannot help
        (6, "error: train: data/balance/class_weights.json: class weights not found", False),  # run a stage first
        (70, "crash: train: RuntimeError: CUDA out of memory", True),  # unexpected: its traceback, then a retry
        (75, "error: train: MLflow tracking server http://x is not reachable", True),
        (1, "exit 1", True),  # Python died before the CLI could say anything
        (None, "ERROR: Unable to acquire lock", True),  # DVC busy
        (-9, "exit -9", True),  # killed
        (255, "ERROR: failed to parse 'stages.train.cmd' in 'dvc.yaml'", False),  # DVC refused the pipeline
    ],
)
def test_only_failures_a_retry_can_fix_are_transient(exit_code: int | None, headline: str, transient: bool) -> None:
    assert StageFailed("train", exit_code, headline, []).transient is transient


def test_sweep_plan_expands_the_grid_over_the_fixed_overrides(tmp_path: Path) -> None:
    path = tmp_path / "lr.yaml"
    path.write_text(
        "set: {train.epochs: 2, train.lr: 9}\ngrid:\n  train.lr: [0.001, 0.01]\n  model.encoder: resnet34\n"
    )
    plan = SweepPlan.read(path)
    assert plan.name == "lr" and plan.stage == "evaluate"
    assert plan.points() == [
        {"train.epochs": 2, "train.lr": 0.001, "model.encoder": "resnet34"},
        {"train.epochs": 2, "train.lr": 0.01, "model.encoder": "resnet34"},
    ]
    assert set_flags({"train.input.size": [32, 32], "model.weights_path": None}) == [
        "-S", "train.input.size=[32, 32]", "-S", "model.weights_path=null",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "text",
    [
        "grid: []",
        "name: x",
        "grid: {a: [1]}\nsets: {}",
        "grid: {a: [1]}\nname: a b",
        "- a",
        "grid: {a: []}",
        "grid: {a: [1]}\nstage: register",
        "grid: {a: [1]}\nstage: trian",
    ],
)
def test_bad_sweep_files_are_rejected_naming_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"bad\.yaml"):
        SweepPlan.read(path)


def test_queued_experiments_find_the_workspace_store(tmp_path: Path) -> None:
    inside = tmp_path / "ws" / ".dvc" / "tmp" / "exps" / "tmpab12" / "sub"
    inside.mkdir(parents=True)
    assert workspace_root(inside) == (tmp_path / "ws").resolve()
    assert workspace_root(tmp_path) == tmp_path.resolve()


def test_summary_reports_validation_metrics_gate_and_run_link(workdir: Path) -> None:
    config = make_config()
    paths = config.paths
    checks = (CheckOutcome("image_decodes", "error", False, 1), CheckOutcome("rgb", "warning", True, 0))
    drift = (DriftRow("brightness_mean", 150.0, 119.0, 31.0, 20.0, True), DriftRow("width_mean", 64, 64, 0, 0.1, False))
    ValidationSummary(False, "quarantine", 5, 4, 1, checks, drift=drift).write(paths)
    EvaluationMetrics({"miou": 0.61234, "pixel_accuracy": 0.9, "mean_dice": None}).write(paths)
    GateDecision("m", "3", "champion", True, False, "2", ("CI lower bound +0.010 > 0",)).write(paths)
    TrainingRun("abc", "1", "http://mlflow.internal:5000").write(paths)
    summary = Summary("t", "promoted", [StageResult("train", True, 12.0), StageResult("prepare", False, 0.2)])
    markdown = run_summary(workdir, summary, config)
    assert "failed: 5 inputs = 4 accepted + 1 quarantined" in markdown
    assert "`image_decodes` (error): 1 failing" in markdown
    assert "`rgb`" not in markdown, "only failing checks are listed"
    assert "drift: brightness_mean +31.000" in markdown and "width_mean" not in markdown
    assert "| miou | 0.6123 |" in markdown and "mean_dice" not in markdown, "undefined metrics are left out"
    assert "m v3 promoted to champion (champion before: 2)" in markdown and "CI lower bound" in markdown
    assert "| train | ran | 12 |" in markdown and "| prepare | up to date | 0 |" in markdown
    assert "(http://mlflow.internal:5000/#/experiments/1/runs/abc)" in markdown


def test_summary_of_a_run_that_stopped_early_leaves_out_what_is_missing(workdir: Path) -> None:
    config = make_config()
    config.paths.metrics.parent.mkdir(parents=True)
    config.paths.metrics.write_text('{"val": {"miou": 0.5}}')  # written by an older version: no schema
    markdown = run_summary(workdir, Summary("t", "failed at stage 'train'"), config)
    assert "failed at stage 'train'" in markdown
    assert "Val metrics" not in markdown and "Data validation" not in markdown and "MLflow" not in markdown


def test_only_missing_outputs_can_be_pulled_instead_of_retrained() -> None:
    fresh_clone = Changes(
        {"prepare": ["outs data/prepared (not in cache)"], "train": ["deps data/prepared (deleted)"]}, []
    )
    assert fresh_clone.outputs_missing_only and not fresh_clone.nothing
    new_data = Changes({"prepare": ["deps /data/incoming (modified)"]}, ["/data/incoming: modified"])
    assert not new_data.outputs_missing_only
    assert not Changes({}, []).outputs_missing_only and Changes({}, []).nothing
