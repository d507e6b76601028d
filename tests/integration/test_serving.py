"""Against a real MLflow tracking server: the pipeline logs and registers there, a server that is down stops
training within seconds naming its URI, and `mlflow models serve` answers with the masks `visionflow predict`
writes for the same image."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import BIN, TINY, make_config, tool_env
from visionflow import registry
from visionflow.cli import app
from visionflow.serving import decode_mask
from visionflow.stages import balance, evaluate, prepare, register, train, validate
from visionflow.tracking import TrackingUnavailable

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {seconds}s")


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_pipeline_against_a_real_tracking_server_and_serving(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, started: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    config = make_config(TINY | {"train.epochs": 2, "model.encoder": "tu-resnet10t"})
    for stage in (prepare, validate, balance):
        stage.run(config)

    from visionflow import tracking
    from visionflow import training as train_module

    with monkeypatch.context() as patch:  # the error comes before any data is loaded, any step, any run
        patch.setattr(train_module, "build_session", lambda *a: pytest.fail("training was set up before the check"))
        patch.setattr(train_module, "train_one_epoch", lambda *a, **k: pytest.fail("a training step ran"))
        patch.setattr(tracking, "_mlflow", lambda config: pytest.fail("an MLflow run was opened"))
        with pytest.raises(TrackingUnavailable, match=f"MLflow tracking server {uri} is not reachable"):
            train.run(config)
    assert not config.paths.checkpoint.exists() and not (workdir / "mlflow.db").exists()

    store = workdir / "server"
    server = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
              "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
              "--artifacts-destination", str(store / "artifacts")]  # fmt: skip
    store.mkdir()
    started.append(subprocess.Popen(server, cwd=store, env=tool_env(), stdout=subprocess.DEVNULL))
    wait_for(f"{uri}/health", started[-1])

    train.run(config)
    evaluate.run(config)
    registered = register.run(config)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    assert len(client.search_runs([experiment.experiment_id])) == 1, "no half-logged run from the failed attempt"
    assert registered.alias == "champion" and not (workdir / "mlflow.db").exists(), "nothing went to a local store"

    image = registry.load_split(config, "val").images[0]
    incoming = workdir / "incoming"
    incoming.mkdir()
    Image.fromarray(image).save(incoming / "frame.png")
    model_uri = f"models:/{config.model_name}@champion"
    predicted = CliRunner().invoke(app, ["predict", "--model", model_uri, "--input", str(incoming),
                                         "--output", str(workdir / "out")])  # fmt: skip
    assert predicted.exit_code == 0, predicted.output
    expected = np.array(Image.open(workdir / "out" / "frame.png"))

    serve_port = free_port()
    serve = [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
             "--host", "127.0.0.1", "--port", str(serve_port)]  # fmt: skip
    started.append(subprocess.Popen(serve, cwd=workdir, env=tool_env(MLFLOW_TRACKING_URI=uri)))
    wait_for(f"http://127.0.0.1:{serve_port}/ping", started[-1])
    payload = {
        "dataframe_split": {
            "columns": ["image"],
            "data": [[base64.b64encode((incoming / "frame.png").read_bytes()).decode()]],
        }
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{serve_port}/invocations",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())["predictions"][0]
    served = decode_mask(answer["mask"])
    assert served.shape == image.shape[:2] == (answer["height"], answer["width"])
    assert np.array_equal(served, expected), "the served model answers what `visionflow predict` wrote"
    assert os.environ["MLFLOW_TRACKING_URI"] == uri
