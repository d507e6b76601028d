"""The Prefect flows on real workspaces: retraining that skips, retrains or stops at bad data; two overlapping runs;
a served deployment on a real Prefect server; a two-point sweep of DVC experiments logged to MLflow."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import copy_project, run_tool, tool_env, write_pair
from visionflow.data import builtin
from visionflow.errors import CRASH
from visionflow.orchestration import OWNER_FILE, workspace_lock

pytestmark = pytest.mark.slow

# one epoch, every planned key pinned (the plan itself is tested in test_pipeline and tests/model/test_plan_stage.py)
TINY_TRAIN = {
    "epochs": 1,
    "batch_size": 8,
    "lr": 0.003,
    "input": {"size": None, "policy": "resize"},
    "rare_crops": 0.333,
}
MODEL = "incoming-segmenter"  # registered under the name of the workspace's data folder, incoming/


def set_params(repo: Path, **sections: dict[str, Any]) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in sections.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def commit(repo: Path, message: str) -> None:
    run_tool("git", "add", "-A", cwd=repo)
    run_tool("git", "commit", "-q", "-m", message, cwd=repo)


def prefect_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **extra,
    }


def flow(repo: Path, tmp_path: Path, script: str, *args: str, check: bool = True) -> str:
    result = run_tool("python", f"pipelines/{script}", *args, cwd=repo, check=check, **prefect_env(tmp_path))
    return result.stdout + result.stderr


def versions(repo: Path) -> list[Any]:
    return MlflowClient(f"sqlite:///{repo / 'mlflow.db'}").search_model_versions(f"name='{MODEL}'")


def dvc_status(repo: Path) -> dict[str, Any]:
    return json.loads(run_tool("dvc", "status", "--json", cwd=repo).stdout or "{}")


@pytest.fixture
def workspace(tmp_path: Path, camvid_like: Callable[..., Path]) -> Path:
    """A git + DVC workspace reading a CamVid-layout folder outside it, trained for one epoch."""
    repo = copy_project(tmp_path / "repo")
    data = camvid_like(tmp_path / "incoming", 8, 4)
    set_params(
        repo,
        data={"source": "folder", "root": str(data), "preset": "camvid", "classes": list(builtin.CLASSES)},
        train=TINY_TRAIN,
        orchestration={"retry_delay_seconds": 1},
    )
    commit(repo, "folder data, tiny training")
    return repo


def test_retraining_skips_unchanged_data_retrains_on_a_new_image_and_stops_at_a_corrupt_one(
    workspace: Path, tmp_path: Path
) -> None:
    first = flow(workspace, tmp_path, "retrain.py")
    assert "promoted:" in first and f"{MODEL} v1 is the new champion" in first
    assert dvc_status(workspace) == {}

    unchanged = flow(workspace, tmp_path, "retrain.py")
    assert "skipped: nothing changed since dvc.lock" in unchanged
    assert "dvc repro train" not in unchanged and len(versions(workspace)) == 1

    forced = flow(workspace, tmp_path, "retrain.py", "--force")
    assert "| train | ran |" in forced and "| register | ran |" in forced and len(versions(workspace)) == 2

    data = tmp_path / "incoming"
    image, mask = builtin.generate_sample(99, builtin.BuiltinConfig(image_size=64, seed=5), has_rare=True)
    write_pair(data, ("train", "trainannot"), "frame_new.png", image, mask)
    remote = tmp_path / "dvc-remote"  # a local folder as the DVC remote
    run_tool("dvc", "remote", "add", "-d", "storage", str(remote), cwd=workspace)
    retrained = flow(workspace, tmp_path, "retrain.py", "--commit", "--push")
    assert "source data changed" in retrained
    assert "| train | ran |" in retrained, "the new image is trained on"
    assert len(versions(workspace)) == 3 and ("promoted:" in retrained or "kept:" in retrained)
    accepted = (workspace / "data" / "validation" / "accepted.csv").read_text()
    assert "frame_new.png" in accepted
    last_commit = run_tool("git", "log", "-1", "--name-only", "--format=%s", cwd=workspace).stdout
    assert last_commit.startswith("retrain: ") and last_commit.split()[-1] == "dvc.lock"
    outs = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]["train"]["outs"]
    model_md5 = next(out["md5"] for out in outs if out["path"].endswith("model.pt"))
    assert (remote / "files" / "md5" / model_md5[:2] / model_md5[2:]).is_file(), "the new model was pushed"

    corrupt = data / "train" / "frame_bad.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    (data / "trainannot" / "frame_bad.png").write_bytes((data / "trainannot" / "frame_new.png").read_bytes())
    stopped = flow(workspace, tmp_path, "retrain.py", check=False)
    assert "stage 'validate' failed" in stopped and "frame_bad.png" in stopped
    assert "not retrying" in stopped, "bad data is never retried"
    assert "dvc repro train" not in stopped and len(versions(workspace)) == 3


CRASH_ONCE = """
import os, sys
if os.path.basename(sys.argv[0]) == "visionflow" and sys.argv[1:2] == ["train"]:
    mark = os.environ["VISIONFLOW_TEST_CRASH_MARK"]
    if not os.path.exists(mark):  # the first attempt only: the retry trains
        open(mark, "w").close()
        import visionflow.stages.train as train

        def run(config, **options):
            raise RuntimeError("injected crash: CUDA out of memory")

        train.run = run
"""


def test_two_overlapping_runs_take_turns_a_crash_is_retried_and_the_workspace_stays_consistent(
    workspace: Path, tmp_path: Path
) -> None:
    """The first run's `visionflow train` crashes once (a sitecustomize every Python process of that run imports):
    the crash shows its traceback and is retried, while the second run waits for the workspace."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(CRASH_ONCE)
    mark = tmp_path / "crashed-once"
    command = ["python", "pipelines/training.py"]
    env = tool_env(**prefect_env(tmp_path, PYTHONPATH=str(hooks), VISIONFLOW_TEST_CRASH_MARK=str(mark)))
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(command, cwd=workspace, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while not (workspace / OWNER_FILE).exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first run never took the workspace"
            time.sleep(0.2)
        second = flow(workspace, tmp_path, "training.py")  # starts while the first is training
        assert first.wait(timeout=600) == 0
    first_log = (tmp_path / "first.log").read_text()
    assert mark.exists() and "Traceback (most recent call last)" in first_log
    assert (
        f"crash: train: RuntimeError: injected crash: CUDA out of memory (an unexpected error, exit {CRASH})"
        in first_log
    )
    assert "exited with 70" in first_log and "- Retry 1/2 will start" in first_log, "a crash is worth a retry"
    assert "| train | ran |" in first_log and "| register | ran |" in first_log, "the retry trained, the flow went on"
    assert "is busy" in second and "waiting up to" in second and "is free after" in second
    assert "completed: everything was up to date" in second, "the second run found the first one's results"
    assert dvc_status(workspace) == {}, "dvc.lock matches every output"
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare", "validate", "balance", "plan", "train", "evaluate", "register"}
    assert len(versions(workspace)) == 1, "the pipeline ran once"

    set_params(workspace, orchestration={"overlap": "skip"})
    with workspace_lock(workspace, "wait", 5, "a test holding the workspace"):
        skipped = flow(workspace, tmp_path, "training.py")
    assert "a test holding the workspace" in skipped and "skipping this run" in skipped
    assert "dvc repro" not in skipped


def test_a_misspelt_key_is_one_line_with_its_own_exit_code_and_never_retried(workspace: Path, tmp_path: Path) -> None:
    params = (workspace / "params.yaml").read_text()
    assert "  epochs: 1\n" in params
    (workspace / "params.yaml").write_text(params.replace("  epochs: 1\n", "  epoch: 1\n"))
    repro = run_tool("dvc", "repro", cwd=workspace, check=False)
    output = repro.stdout + repro.stderr
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert repro.returncode != 0 and errors == [
        "error: prepare: params.yaml: unknown key 'train.epoch'; allowed keys here: augment, batch_size, "
        "channels_last, checkpoint_minutes, device, early_stopping, ema_decay, epochs, focal_gamma, grad_clip, "
        "input, loss, lr, num_threads, precision, rare_crops, schedule, warmup_epochs, weight_decay"
    ], output
    assert "exited with 5" in output and "Traceback" not in output
    stopped = run_tool("python", "pipelines/training.py", cwd=workspace, check=False, **prefect_env(tmp_path))
    log = stopped.stdout + stopped.stderr
    assert stopped.returncode == 1 and f"error: params: {workspace / 'params.yaml'}: unknown key 'train.epoch'" in log
    assert "no stage was started" in log and "dvc repro" not in log and "- Retry 1/" not in log
    assert "Traceback" not in log, "a params mistake is one line in the flow too"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[str]:
    """`prefect server start` on a free loopback port with its own PREFECT_HOME; yields the API URL."""
    port, home = free_port(), tmp_path / "prefect-server"
    home.mkdir()
    env = tool_env(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    with (home / "server.log").open("w") as log:
        server = subprocess.Popen(["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
                                  env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (home / "server.log").read_text()
            assert time.monotonic() < deadline, "prefect server did not come up in 120 s"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_served_retraining_deployment_runs_on_a_prefect_server(
    workspace: Path, tmp_path: Path, prefect_server: str
) -> None:
    env = prefect_env(tmp_path, PREFECT_API_URL=prefect_server, PREFECT_RUNNER_POLL_FREQUENCY="1")
    with (tmp_path / "serve.log").open("w") as log:
        command = ["python", "pipelines/retrain.py", "serve", "--cron", "0 3 * * *"]
        served = subprocess.Popen(command, cwd=workspace, env=tool_env(**env), stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
    try:
        deployment_url = f"{prefect_server}/deployments/name/visionflow-retrain/scheduled"
        deadline = time.monotonic() + 120
        while (response := httpx.get(deployment_url, timeout=5)).status_code != 200:
            assert served.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "the deployment was never registered"
            time.sleep(0.5)
        deployment = response.json()
        assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 3 * * *"]

        triggered = run_tool("prefect", "deployment", "run", "visionflow-retrain/scheduled", "--watch",
                             "--watch-interval", "2", "--watch-timeout", "600", cwd=workspace, **env)  # fmt: skip
        flow_run_id = triggered.stdout.split("UUID:")[1].split()[0]
        flow_run = httpx.get(f"{prefect_server}/flow_runs/{flow_run_id}", timeout=5).json()
        assert flow_run["state"]["type"] == "COMPLETED" and flow_run["deployment_id"] == deployment["id"]
    finally:
        os.killpg(served.pid, signal.SIGTERM)
        served.wait(timeout=30)

    client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version in (1, "1") and champion.tags["prefect_flow_run_id"] == flow_run_id
    artifacts = httpx.post(f"{prefect_server}/artifacts/filter", timeout=5,
                           json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}).json()  # fmt: skip
    summary = next(a for a in artifacts if a["key"] == "retrain-summary")
    assert "promoted:" in summary["data"] and "## Promotion gate" in summary["data"]


def test_a_two_point_sweep_runs_both_experiments_and_registers_the_best(tmp_path: Path) -> None:
    repo = copy_project(tmp_path / "repo")
    set_params(repo, train={key: TINY_TRAIN[key] for key in ("input", "rare_crops")})  # with the sweep's: no probe
    commit(repo, "whole images")
    plan = tmp_path / "tiny.yaml"
    plan.write_text(yaml.safe_dump({"name": "tiny", "set": {"data.builtin.num_images": 24, "train.epochs": 1,
                                                            "train.batch_size": 8},
                                    "grid": {"train.lr": [0.001, 0.01]}}, sort_keys=False))  # fmt: skip
    out = flow(repo, tmp_path, "sweep.py", str(plan), "--apply-best")
    assert "| tiny-1 | 24 | 1 | 8 | 0.001 |" in out and "| tiny-2 | 24 | 1 | 8 | 0.01 |" in out

    shown = json.loads(run_tool("dvc", "exp", "show", "--json", cwd=repo).stdout)
    experiments = {e["name"]: e["revs"][0]["data"] for b in shown for e in b.get("experiments") or []}
    assert set(experiments) == {"tiny-1", "tiny-2"}
    scores = {}
    for name, data in experiments.items():
        scores[name] = data["metrics"]["data/evaluation/headline.json"]["data"]["val"]["miou"]
        assert data["params"]["params.yaml"]["data"]["train"]["lr"] == {"tiny-1": 0.001, "tiny-2": 0.01}[name]

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("visionflow").experiment_id], "tags.sweep = 'tiny'")
    assert sorted(r.data.tags["dvc_experiment"] for r in runs) == ["tiny-1", "tiny-2"]
    for run in runs:  # each experiment's own training run, with its evaluation logged into it
        assert run.data.metrics["val/miou"] == pytest.approx(scores[run.data.tags["dvc_experiment"]], abs=1e-6)

    best = max(scores, key=scores.__getitem__)
    assert f"best: {best}" in out and "applied and registered" in out
    version = client.get_model_version_by_alias("builtin-shapes-segmenter", "champion")
    assert client.get_run(version.run_id).data.tags["dvc_experiment"] == best
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["lr"] == {"tiny-1": 0.001, "tiny-2": 0.01}[best]
