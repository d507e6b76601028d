"""A newcomer's path: `visionflow init` on two folders of their own, each then `dvc repro` to a registered model,
both models registered side by side."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import BIN, copy_project, run_tool
from tests.data.test_survey import binary_templated, colour_coded

pytestmark = pytest.mark.slow

QUICK = {  # pinned so that nothing is measured: the wiring is under test, not the model
    "  epochs: auto": "  epochs: 2",
    "  batch_size: auto": "  batch_size: 8",
    "  input: auto": "  input: {size: [64, 64], policy: resize}",
}


def test_init_writes_params_that_train_and_register_each_dataset_under_its_own_name(tmp_path: Path) -> None:
    repo = copy_project(tmp_path / "project")
    params = repo / "params.yaml"
    text = params.read_text()
    for old, new in QUICK.items():
        assert old in text
        text = text.replace(old, new, 1)
    params.write_text(text)
    names = []
    for make, folder in ((binary_templated, "roads"), (colour_coded, "Street Scenes")):
        root = make(tmp_path / folder)
        shown = run_tool(str(BIN / "visionflow"), "init", str(root), "--write", cwd=repo).stdout
        assert "init: wrote the data section" in shown, shown
        run_tool("dvc", "repro", cwd=repo)
        registration = (repo / "data" / "registry" / "registration.json").read_text()
        names.append(registration)
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    for name in ("roads-segmenter", "street-scenes-segmenter"):
        champion = client.get_model_version_by_alias(name, "champion")
        assert str(champion.version) == "1", f"{name}: each dataset's first version is its own champion"
    assert '"roads-segmenter"' in names[0] and '"street-scenes-segmenter"' in names[1]
