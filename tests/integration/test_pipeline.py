"""End to end: `dvc repro` of the default pipeline in a fresh git + DVC repository, then the Prefect flow."""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import REPO, copy_project, run_tool
from visionflow.data import builtin
from visionflow.handoffs import ModelMeta

pytestmark = pytest.mark.slow


def ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


EPOCHS = 3  # the default params (the rest of the train keys planned) but a shorter training: the wiring is under
# test here, not the model's quality


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default pipeline on the built-in data (input, batch, lr planned), with the epochs pinned to fewer, run
    once by `dvc repro` (shared by the tests below)."""
    repo = copy_project(tmp_path_factory.mktemp("project"))
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("  epochs: auto", f"  epochs: {EPOCHS}"))
    run_tool("git", "commit", "-qam", "fewer epochs", cwd=repo)
    result = run_tool("dvc", "repro", cwd=repo)
    assert ran_stages(result.stdout) == ["prepare", "validate", "balance", "plan", "train", "evaluate", "register"]
    return repo


def mlflow_client(repo: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")


def test_outputs_metrics_and_one_complete_mlflow_run(project: Path) -> None:
    for path in (
        "data/prepared/manifest.csv",
        "data/validation/summary.json",
        "data/validation/docs/index.html",
        "data/balance/class_weights.json",
        "data/model/model.pt",
        "data/model/checkpoint.pt",
        "data/evaluation/val/confusion_matrix.png",
    ):
        assert (project / path).is_file(), path
    metrics = json.loads((project / "data/evaluation/metrics.json").read_text())
    assert metrics["val"]["miou"] >= 0.3, f"three epochs lift val mIoU well above an untrained model's; {metrics}"
    shown = run_tool("dvc", "plots", "show", "-o", "dvc_plots", cwd=project)  # no test split: no warning, no failure
    assert "failed to load" not in shown.stdout + shown.stderr, shown.stderr
    page = (project / "dvc_plots" / "index.html").read_text()
    assert not re.search(r"<script[^>]+src=", page), "drawn offline: the Vega libraries are in the page"
    assert "vegaEmbed" in page and "IoU per class (val)" in page
    divs = set(re.findall(r'<div id *= *"([^"]+)"', page))
    embedded = re.findall(r"vegaEmbed\('#([^']+)'", page)
    assert embedded and all(e in divs for e in embedded), "each chart finds its place (a quote in a title breaks it)"
    assert "IoU per class (test)" not in page
    shown = run_tool("dvc", "metrics", "show", cwd=project).stdout  # the headline figures, readable
    assert "headline.json" in shown and "val.miou" in shown and "iou_" not in shown, shown
    assert max(map(len, shown.splitlines())) <= 200, shown  # one table of the headline columns, not 700 chars

    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("visionflow")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, "one MLflow run per pipeline execution"
    run = runs[0]
    assert run.data.params["train.epochs"] == str(EPOCHS) and run.data.params["balance.method"] == "median_frequency"
    assert run.data.metrics["val/miou"] == pytest.approx(metrics["val"]["miou"], abs=1e-6)
    assert len(client.get_metric_history(run.info.run_id, "train/val_miou")) == EPOCHS, "a curve point per epoch"
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    prepared_md5 = lock["stages"]["prepare"]["outs"][0]["md5"]
    assert run.data.tags["data_hash"] == f"md5:{prepared_md5}"
    datasets = {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in run.inputs.dataset_inputs
    }
    assert set(datasets) == {"train", "val"}, "the accepted manifest of each split is an input of the run"
    assert {d.digest for d in datasets.values()} == {prepared_md5.removesuffix(".dir")}
    assert datasets["train"].name == "builtin-shapes/train" and datasets["train"].source_type == "local"
    # at a glance: named from the data, model and input; only the params that apply; metrics grouped by prefix
    assert run.info.run_name == "builtin-shapes unet-resnet18 64x64"
    assert "data.builtin.kind" in run.data.params and "train.ema_decay" in run.data.params
    assert not [k for k in run.data.params if k.startswith(("data.digits.", "data.csv.", "data.masks", "orchestr"))]
    assert all("/" in k for k in run.data.metrics), [k for k in run.data.metrics if "/" not in k]
    assert "val/iou/star" in run.data.metrics and "val/corruption/fog/3" in run.data.metrics
    assert experiment.tags["mlflow.note.content"].startswith("visionflow: one run per trained model")
    cpu = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
    assert len(cpu) >= 3, "system metrics sampled through the training"
    assert "system/system_memory_usage_megabytes" in run.data.metrics
    head = run_tool("git", "rev-parse", "HEAD", cwd=project).stdout.strip()
    assert run.data.tags["git_commit"].startswith(head)

    from mlflow.artifacts import download_artifacts

    local = Path(download_artifacts(run_id=run.info.run_id, tracking_uri=f"sqlite:///{project / 'mlflow.db'}"))
    for artifact in (
        "validation/summary.json",
        "validation/data_docs/index.html",
        "balance/class_weights.json",
        "balance/class_distribution.png",
        "validation/report.md",
        "training/history.csv",
        "evaluation/metrics.json",
        "evaluation/headline.json",
        "evaluation/val/confusion_matrix.png",
    ):
        assert (local / artifact).is_file(), artifact

    version = client.get_model_version_by_alias("builtin-shapes-segmenter", "champion")
    assert str(version.version) == "1" and version.run_id == run.info.run_id
    assert (
        version.description.startswith("Data: builtin-shapes (md5:")
        and "Gate: promoted to champion" in version.description
    )
    assert f"val: miou {metrics['val']['miou']:.4f}" in version.description
    registered = client.get_registered_model("builtin-shapes-segmenter")
    assert registered.description.startswith("Segmentation model of the builtin-shapes data, classes: background")
    assert (project / "mlartifacts").is_dir(), "artifacts stay in the working tree"


def test_registered_model_loads_and_predicts(project: Path) -> None:
    import mlflow
    import numpy as np
    import pandas as pd

    from visionflow.serving import decode_mask

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    uri = "models:/builtin-shapes-segmenter@champion"
    packed = Path(mlflow.artifacts.download_artifacts(uri))
    assert (packed / "code" / "visionflow" / "serving.py").is_file(), "the model carries its code"
    meta = ModelMeta.load(next(packed.glob("artifacts/model.pt")))
    assert meta.classes[0] == "background" and meta.input_policy == "resize", "the preprocessing travels with it"
    assert not list(packed.glob("artifacts/preprocessing.json")), "no second copy of the preprocessing"
    shown = yaml.safe_load((packed / "MLmodel").read_text())["metadata"]
    assert shown["input_policy"] == "resize" and shown["classes"] == list(meta.classes)
    model = mlflow.pyfunc.load_model(uri)
    out = model.predict(pd.DataFrame({"image": [np.zeros((64, 48, 3), np.uint8)]}))
    mask = decode_mask(out["mask"][0])
    assert mask.shape == (64, 48) and mask.max() < 6


def test_second_repro_does_nothing_and_epochs_rerun_only_the_model(project: Path) -> None:
    again = run_tool("dvc", "repro", cwd=project)
    assert ran_stages(again.stdout) == [] and "up to date" in again.stdout

    params = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(params.replace(f"  epochs: {EPOCHS}", "  epochs: 2"))
    changed = run_tool("dvc", "repro", cwd=project)
    assert ran_stages(changed.stdout) == ["plan", "train", "evaluate", "register"], "plan keeps the pinned epochs"
    registration = json.loads((project / "data/registry/registration.json").read_text())
    assert registration["version"] == "2" and registration["alias"] == "challenger", registration
    client = mlflow_client(project)
    assert str(client.get_model_version_by_alias("builtin-shapes-segmenter", "champion").version) == "1"
    assert len(client.search_runs([client.get_experiment_by_name("visionflow").experiment_id])) == 2

    shown = run_tool("dvc", "metrics", "show", cwd=project).stdout
    assert "val.miou" in shown
    plots = json.loads(run_tool("dvc", "plots", "show", "--json", cwd=project).stdout)["data"]
    curve = plots["Training loss"][0]["content"]["data"]["values"]
    assert len(curve) == 2 * 2, "train and val loss for each of the 2 epochs"
    assert any(name.endswith("confusion_matrix.png") for name in plots)
    assert {"data/balance/class_distribution.csv", "IoU per class (val)"} <= set(plots)
    score = next(name for name in plots if name.startswith("Val score"))
    assert len(plots[score][0]["content"]["data"]["values"]) == 2, "one val score per epoch"


def test_prefect_flow_runs_the_stages(project: Path, tmp_path: Path) -> None:
    result = run_tool("python", "pipelines/training.py", cwd=project, PREFECT_HOME=str(tmp_path / "prefect"))
    log = result.stdout + result.stderr
    for stage in ("prepare", "validate", "balance", "plan", "train", "evaluate", "register"):
        assert f"dvc repro {stage}" in log
    assert "Finished in state Completed" in log


def test_prefect_flow_stops_at_bad_data_with_the_stage_error(tmp_path: Path, camvid_like: Callable[..., Path]) -> None:
    repo = copy_project(tmp_path / "repo")
    data = camvid_like(tmp_path / "incoming", 4, 2)
    broken = data / "train" / "frame_001.png"
    broken.write_bytes(broken.read_bytes()[:100])
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(source="folder", root=str(data), preset="camvid", classes=list(builtin.CLASSES))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run_tool("python", "pipelines/training.py", cwd=repo, check=False, PREFECT_HOME=str(tmp_path / "prefect"))
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert "stage 'validate' failed" in log and "frame_001.png" in log, log[-4000:]
    assert "dvc repro balance" not in log, "the flow stops at the first failing stage"


def test_a_change_to_shared_code_makes_every_stage_that_imports_it_stale(project: Path) -> None:
    """dvc.yaml lists each module a stage imports: touching one reruns exactly the stages that import it."""
    for module, stale in (
        ("config.py", {"prepare", "validate", "balance", "plan", "train", "evaluate", "register"}),
        ("gate.py", {"register"}),
        ("engine.py", {"plan", "train", "evaluate", "register"}),
    ):
        path = project / "src" / "visionflow" / module
        original = path.read_text()
        path.write_text(original + "# a comment\n")
        try:
            status = json.loads(run_tool("dvc", "status", "--json", cwd=project).stdout or "{}")
        finally:
            path.write_text(original)
        assert set(status) == stale, (module, status)
    assert json.loads(run_tool("dvc", "status", "--json", cwd=project).stdout or "{}") == {}


ELSEWHERE = "cuda: NVIDIA H200, 140 GiB, bf16"


def plan_elsewhere(repo: Path) -> None:
    """plan.json as a GPU machine would have made it, committed there: DVC sees nothing to do here."""
    path = repo / "data" / "plan" / "plan.json"
    made = json.loads(path.read_text())
    path.write_text(json.dumps(made | {"machine": ELSEWHERE}, indent=2) + "\n")
    run_tool("dvc", "commit", "-f", cwd=repo)
    assert json.loads(run_tool("dvc", "status", "--json", cwd=repo).stdout or "{}") == {}


def planned_on(repo: Path) -> str:
    return json.loads((repo / "data" / "plan" / "plan.json").read_text())["machine"]


def test_a_plan_made_on_another_kind_of_machine_is_made_again_by_dev_py_and_by_the_flow(
    project: Path, tmp_path: Path
) -> None:
    """DVC cannot see a move from a GPU to this CPU; `dev.py repro` and the Prefect flow plan again."""
    venv = Path(sys.executable).parent.parent  # dev.py in the copy uses this environment as its .venv
    for name in ("dev.py", "pyproject.toml", "constraints.txt"):
        shutil.copy2(REPO / name, project / name)
    stamp = venv / ".visionflow-installed"
    if not stamp.is_file():
        pytest.skip("the test environment was not made by dev.py: dev.py in the copy would install into it")
    (project / ".venv").symlink_to(venv)
    (project / ".gitignore").write_text((project / ".gitignore").read_text() + "/.venv\n")
    run_tool("git", "add", "-A", cwd=project)
    run_tool("git", "commit", "-qm", "dev.py", cwd=project)

    plan_elsewhere(project)
    replanned = run_tool("python", "dev.py", "repro", cwd=project)
    assert "[dev] installing" not in replanned.stdout, "the environment was already up to date"
    ran = ran_stages(replanned.stdout)
    assert ran == ["plan", "train", "evaluate", "register"], "planned again here, and the new plan is trained"
    assert planned_on(project).startswith("cpu: ")
    assert json.loads(run_tool("dvc", "status", "--json", cwd=project).stdout or "{}") == {}

    plan_elsewhere(project)
    flowed = run_tool("python", "pipelines/training.py", cwd=project, PREFECT_HOME=str(tmp_path / "prefect"))
    log = flowed.stdout + flowed.stderr
    assert f"was planned on '{ELSEWHERE}'" in log and planned_on(project).startswith("cpu: "), log[-3000:]
