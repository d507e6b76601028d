"""The plan stage on the built-in data: it plans every train key left at auto, with a reason each, train runs
with the plan, pinned keys stay, and the same data, params and machine kind give the same plan file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO, TINY, make_config
from visionflow.cli import app
from visionflow.config import PLANNED
from visionflow.errors import MissingInput
from visionflow.handoffs import AcceptedManifest, PlanFile
from visionflow.stages import balance, plan, prepare, train, validate

AUTO = {f"train.{key}": "auto" for key in PLANNED}


def test_auto_keys_are_planned_with_reasons_and_train_runs_the_plan(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(TINY | AUTO | {"plan.budget_minutes": 0.3, "plan.batches": [2, 4, 8]})
    for stage in (prepare, validate, balance):
        stage.run(config)
    with pytest.raises(MissingInput, match=r"plan\.json"):
        train.run(config)
    made = plan.run(config)
    assert {d.key for d in made.decisions} == set(AUTO) and not any(d.pinned for d in made.decisions)
    assert all(d.reason for d in made.decisions), made.table()
    assert made.value("train.input")["size"] == [64, 64] and made.value("train.batch_size") in (2, 4, 8)
    assert 0 < made.estimated_minutes <= 0.3 * 1.1 and made.machine.startswith("cpu: ")
    epochs = next(d for d in made.decisions if d.key == "train.epochs")
    assert "measured" in epochs.reason, "two real epochs at the planned settings set the epochs"
    assert any(note.startswith("real epochs at ") for note in made.notes), made.notes
    first = config.paths.plan_file.read_bytes()
    assert config.paths.machine_profile.is_file() and "| `train.epochs` |" in config.paths.plan_report.read_text()
    capsys.readouterr()  # the first run measured
    plan.run(config)
    assert config.paths.plan_file.read_bytes() == first, "the same data, params and machine kind: the same plan"
    assert "plan: measuring" not in capsys.readouterr().out, "measured once, then read from machine.json"
    monkeypatch.setattr(plan, "_code", lambda: "another version of the training code")
    plan.run(config)
    shown = capsys.readouterr().out
    assert "plan: measuring" in shown and "plan: timing two real epochs" in shown, "new code: measured again"

    assert plan.stale(config) is None, "planned on this machine"
    moved = PlanFile.read(config.paths)
    dataclasses.replace(moved, machine="cuda: NVIDIA H200, 140 GiB, bf16").write(config.paths)
    assert "planned on 'cuda: NVIDIA H200" in (plan.stale(config) or ""), "DVC cannot see the move: the plan can"
    checked = CliRunner().invoke(app, ["plan", "--check", "--params", str(REPO / "params.yaml")])
    assert checked.exit_code == 9 and "this machine is 'cpu: " in checked.output, checked.output
    made.write(config.paths)
    assert CliRunner().invoke(app, ["plan", "--check", "--params", str(REPO / "params.yaml")]).exit_code == 0

    meta = train.run(config, resume="never")
    assert meta.epochs == made.value("train.epochs") and meta.input_size == (64, 64)
    explained = CliRunner().invoke(app, ["plan", "--explain", "--params", str(REPO / "params.yaml")])
    assert explained.exit_code == 0 and "train.batch_size" in explained.output, explained.output


def test_a_pinned_key_stays_and_the_rest_is_planned_around_it(workdir: Path) -> None:
    config = make_config(TINY | AUTO | {"train.epochs": 2, "plan.budget_minutes": 0.3, "plan.batches": [2, 4]})
    for stage in (prepare, validate, balance):
        stage.run(config)
    made = plan.run(config)
    pinned = {d.key: d for d in made.decisions if d.pinned}
    assert list(pinned) == ["train.epochs"] and pinned["train.epochs"].value == 2
    assert PlanFile.read(config.paths) == made


def test_the_fingerprint_counts_the_train_groups_and_grouped_images_get_the_whole_set(workdir: Path) -> None:
    groups = {"data.groups.pattern": r"_(?P<group>\d{4})\d\.png$"}  # shapes_00012.png: ten frames a group
    made = {}
    for name, extra in (("plain", {}), ("grouped", groups)):
        config = make_config(TINY | {"train.augment": "auto", "train.epochs": 2} | extra)
        for stage in (prepare, validate, balance):
            stage.run(config)
        made[name] = plan.run(config)
    train = AcceptedManifest.read(config.paths).split("train")
    assert made["plain"].value("train.augment") == {"hflip": 0.5}, "2 passes, no groups: a left-right flip"
    assert made["grouped"].value("train.augment")["affine"] > 0, "2 passes from groups: the whole set"
    reason = next(d.reason for d in made["grouped"].decisions if d.key == "train.augment")
    assert f"the {len(train)} train images come from {train['group'].nunique()} group(s)" in reason, reason
