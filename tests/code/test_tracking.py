from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_config
from visionflow import tracking


def test_default_store_is_sqlite_in_the_working_tree(workdir: Path) -> None:
    uri = tracking.tracking_uri(make_config())
    assert uri == f"sqlite:///{(workdir / 'mlflow.db').as_posix()}"


def test_params_then_environment_override(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config({"tracking.uri": "http://127.0.0.1:5999"})
    assert tracking.tracking_uri(config) == "http://127.0.0.1:5999"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert tracking.tracking_uri(config) == "sqlite:///elsewhere.db"


def test_embedded_experiment_keeps_artifacts_beside_the_database(workdir: Path) -> None:
    config = make_config()
    mlflow = tracking._mlflow(config)  # also exports MLFLOW_TRACKING_URI, as mlflow does
    experiment = mlflow.get_experiment(tracking._experiment_id(mlflow, config))
    assert experiment.artifact_location == (workdir / "mlartifacts").as_uri()


def test_data_hash_reads_prepare_output_from_dvc_lock(workdir: Path) -> None:
    config = make_config()
    (workdir / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  prepare:\n    outs:\n    - path: data/prepared\n      md5: abc.dir\n"
    )
    assert tracking.data_hash(config) == "md5:abc.dir"


def test_data_hash_falls_back_to_the_accepted_manifest(workdir: Path) -> None:
    config = make_config()
    assert tracking.data_hash(config) == "none"
    config.paths.accepted.parent.mkdir(parents=True)
    config.paths.accepted.write_text("id\n1\n")
    first = tracking.data_hash(config)
    config.paths.accepted.write_text("id\n2\n")
    assert first.startswith("accepted-sha256:") and tracking.data_hash(config) != first


def test_a_down_server_is_reported_after_one_try_naming_its_uri(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The health check is one request with a short timeout, and MLflow (whose client retries for minutes) is
    never asked."""
    import socket
    import urllib.request

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    requests: list[tuple[str, float]] = []
    real_urlopen = urllib.request.urlopen

    def counted(url: str, timeout: float) -> object:
        requests.append((url, timeout))
        return real_urlopen(url, timeout=timeout)

    monkeypatch.setattr(urllib.request, "urlopen", counted)
    monkeypatch.setattr(tracking, "_mlflow", lambda config: pytest.fail("MLflow was reached for"))
    config = make_config({"tracking.uri": f"http://127.0.0.1:{port}"})
    with pytest.raises(tracking.TrackingUnavailable, match=f"http://127.0.0.1:{port} is not reachable") as err:
        tracking.ensure_reachable(config)
    assert requests == [(f"http://127.0.0.1:{port}/health", 3.0)], "one request, a few seconds at most"
    assert err.value.exit_code == 75
    tracking.ensure_reachable(make_config())  # the embedded store needs no server
    assert len(requests) == 1, "nor does it make a request"
