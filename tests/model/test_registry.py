"""Registry behaviour: the gate moves aliases on real versions, rollback undoes a promotion, and the logged
pyfunc is self-contained: base64 images or arrays in, the same masks as `visionflow predict` out."""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import TINY, make_config
from visionflow import registry, tracking
from visionflow.cli import app
from visionflow.config import Config
from visionflow.data import builtin
from visionflow.handoffs import ModelMeta, Registration, load_weights_and_meta
from visionflow.models import create_model, save_model
from visionflow.serving import VisionflowPyfunc, decode_mask
from visionflow.stages import balance, evaluate, prepare, register, train, validate

SETTINGS = TINY | {"data.builtin.num_images": 60, "train.epochs": 4, "model.encoder": "tu-resnet10t"}


def untrained(config: Config) -> None:
    """Replace the trained weights with a fresh initialisation: a clearly worse model of the same kind."""
    torch.manual_seed(123)
    model = create_model(config.model, "segmentation", len(builtin.CLASSES))
    save_model(model, config.paths.weights, ModelMeta.read(config.paths))


def register_current(config: Config) -> Registration:
    evaluate.run(config)
    return register.run(config)


@pytest.fixture
def trained(workdir: Path) -> tuple[Config, Path]:
    config = make_config(SETTINGS)
    for stage in (prepare, validate, balance, train):
        stage.run(config)
    keep = workdir / "trained.pt"
    shutil.copy(config.paths.weights, keep)
    return config, keep


def test_gate_promotes_the_better_keeps_the_worse_out_and_rollback_restores(
    trained: tuple[Config, Path], workdir: Path
) -> None:
    config, weights = trained
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    name = config.model_name

    untrained(config)
    first = register_current(config)
    assert (first.version, first.alias, first.reasons) == ("1", "champion", ("no champion yet",))

    shutil.copy(weights, config.paths.weights)
    better = register_current(config)
    assert better.promoted and better.alias == "champion", better.reasons
    assert str(client.get_model_version_by_alias(name, "previous").version) == "1"
    decision = json.loads(config.paths.decision.read_text())
    assert decision["gate"]["ci_low"] > 0 and decision["champion_before"] == "1"

    untrained(config)
    worse = register_current(config)
    assert not worse.promoted and worse.alias == "challenger"
    assert any("lower bound not above" in r or "drops beyond" in r for r in worse.reasons)
    tags = client.get_model_version(name, worse.version).tags
    assert tags["gate.decision"] == "not promoted" and "CI" in tags["gate.reasons"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2", "the champion stays"

    lineage = client.get_model_version(name, "2").tags
    for key in ("run_id", "git_commit", "data_hash", "params_hash", "validation", "prefect_flow_run_id", "val_miou"):
        assert lineage.get(key), key
    assert lineage["validation"].startswith("passed:")

    runner = CliRunner()
    listed = runner.invoke(app, ["models", "--params", str(_params(config, workdir))])
    assert listed.exit_code == 0 and "champion" in listed.output and "challenger" in listed.output
    rolled = runner.invoke(app, ["rollback", "--params", str(_params(config, workdir))])
    assert rolled.exit_code == 0, rolled.output
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    forced = runner.invoke(app, ["promote", "3", "--force", "--params", str(_params(config, workdir))])
    assert forced.exit_code == 0 and str(client.get_model_version_by_alias(name, "champion").version) == "3"
    assert json.loads(config.paths.decision.read_text())["forced"] is True
    refused = runner.invoke(app, ["promote", "1", "--params", str(_params(config, workdir))])
    assert refused.exit_code == 3 and "not above" in refused.output, "identical weights: no confident gain"
    missing = runner.invoke(app, ["promote", "99", "--params", str(_params(config, workdir))])
    assert missing.exit_code == 8 and f"{name} has no version 99" in missing.output, missing.output
    assert "Traceback" not in missing.output
    params = str(_params(config, workdir))
    nowhere = runner.invoke(app, ["predict", "--model", f"models:/{name}@nobody", "--input", str(workdir),
                                  "--output", str(workdir / "out"), "--params", params])  # fmt: skip
    assert nowhere.exit_code == 8 and f"models:/{name}@nobody" in nowhere.output, nowhere.output


def _params(config: Config, workdir: Path) -> Path:
    import yaml

    path = workdir / "params.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False))
    return path


def test_pyfunc_takes_base64_or_arrays_and_matches_predict(trained: tuple[Config, Path], workdir: Path) -> None:
    config, _ = trained
    registered = register_current(config)
    uri = f"models:/{config.model_name}/{registered.version}"
    images = workdir / "incoming"
    images.mkdir()
    val = registry.load_split(config, "val")
    for i in range(3):
        Image.fromarray(val.images[i]).save(images / f"img_{i}.png")
    (images / "broken.png").write_bytes(b"not a png")

    result = CliRunner().invoke(
        app, ["predict", "--model", uri, "--input", str(images), "--output", str(workdir / "out"),
              "--params", str(_params(config, workdir))],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "3 images" in result.output and "1 unreadable" in result.output
    errors = pd.read_csv(workdir / "out" / "errors.csv")
    assert errors["file"].str.endswith("broken.png").all()
    assert (workdir / "out" / "img_0_overlay.jpg").is_file()
    # the model.pt train wrote predicts alike, with no registry involved
    command = ["predict", "--input", str(images), "--params", "nowhere.yaml", "--output"]
    from_file = CliRunner().invoke(app, [*command, str(workdir / "out_file"), "--model", str(config.paths.weights)])
    assert from_file.exit_code == 0, from_file.output
    for i in range(3):
        assert np.array_equal(np.array(Image.open(workdir / "out_file" / f"img_{i}.png")),
                              np.array(Image.open(workdir / "out" / f"img_{i}.png")))  # fmt: skip
    (workdir / "notes.pt").write_text("not a model")
    bad = CliRunner().invoke(app, [*command, str(workdir / "out_bad"), "--model", str(workdir / "notes.pt")])
    assert bad.exit_code == 7 and "notes.pt: not a model.pt written by `visionflow train`" in bad.output, bad.output

    import mlflow

    tracking.tracking_uri(config)
    mlflow.set_tracking_uri(tracking.tracking_uri(config))
    model = mlflow.pyfunc.load_model(uri)
    encoded = [base64.b64encode((images / f"img_{i}.png").read_bytes()).decode() for i in range(3)]
    by_base64 = model.predict(pd.DataFrame({"image": encoded}))
    by_array = model.predict(pd.DataFrame({"image": [val.images[i] for i in range(3)]}))
    for i in range(3):
        expected = np.array(Image.open(workdir / "out" / f"img_{i}.png"))
        assert np.array_equal(decode_mask(by_base64["mask"][i]), expected)
        assert np.array_equal(decode_mask(by_array["mask"][i]), expected)
        assert expected.shape == val.images[i].shape[:2]
    with pytest.raises(Exception, match="image 0: not valid base64"):
        model.predict(pd.DataFrame({"image": ["%%%"]}))


def test_a_version_registered_before_the_metadata_carried_preprocessing_still_loads_and_is_gated(
    trained: tuple[Config, Path], workdir: Path
) -> None:
    """Versions logged by the previous release (model.pt with schema-1 metadata and a preprocessing.json beside it)
    keep serving, and the gate still scores them against a new candidate."""
    import mlflow

    import visionflow

    config, _ = trained
    state, meta = load_weights_and_meta(config.paths.weights)
    old = workdir / "old"
    old.mkdir()
    legacy_meta = {"task": "segmentation", "arch": meta.arch, "encoder": meta.encoder, "classes": list(meta.classes),
                   "ignore_index": meta.ignore_index, "epoch": meta.epoch, "val_miou": meta.score}  # fmt: skip
    torch.save({"state_dict": state, "meta": legacy_meta}, old / "model.pt")
    (old / "preprocessing.json").write_text(json.dumps({
        "task": "segmentation", "classes": list(meta.classes), "ignore_index": meta.ignore_index, "policy": "resize",
        "size": None, "threshold": None, "precision": "bf16", "channels_last": True,
    }))  # fmt: skip
    mlflow.set_tracking_uri(tracking.tracking_uri(config))
    name = config.model_name
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="model", python_model=VisionflowPyfunc(), registered_model_name=name,
            artifacts={"weights": str(old / "model.pt"), "preprocessing": str(old / "preprocessing.json")},
            code_paths=[str(Path(visionflow.__file__).parent)],
        )  # fmt: skip
    tracking.set_alias(config, name, "champion", "1")

    loaded = mlflow.pyfunc.load_model(f"models:/{name}/1").unwrap_python_model().predictor
    assert (loaded.meta.input_policy, loaded.meta.input_size, loaded.meta.classes) == ("resize", None, meta.classes)
    val = registry.load_split(config, "val")
    current = registry.score_version(config, f"models:/{name}/1", val)
    assert len(current.per_image) == len(val.ids) and not np.isnan(current.per_image).all()

    candidate = register_current(config)  # the same weights, packed the new way
    decision = json.loads(config.paths.decision.read_text())
    assert (candidate.version, decision["champion_before"]) == ("2", "1")
    assert decision["gate"] is not None and decision["gate"]["images"] == len(val.ids), "both were scored"
    assert decision["gate"]["mean_difference"] == pytest.approx(0.0, abs=1e-9), "same weights, same masks"
    assert not candidate.promoted and candidate.alias == "challenger"


def test_a_name_whose_champion_predicts_other_classes_keeps_the_new_version_as_challenger(
    trained: tuple[Config, Path], workdir: Path
) -> None:
    """Two datasets registered under one name: the second one's version is kept as challenger, with the reason and
    the fix (register.model_name), not a registry error; the first one's champion stays."""
    import mlflow

    import visionflow

    config, weights = trained
    state, meta = load_weights_and_meta(weights)
    other = workdir / "other"
    other.mkdir()
    renamed = replace(meta, classes=tuple(f"other_{name}" for name in meta.classes))  # another dataset's model
    renamed.save(other / "model.pt", state)
    mlflow.set_tracking_uri(tracking.tracking_uri(config))
    with mlflow.start_run():
        mlflow.pyfunc.log_model(name="model", python_model=VisionflowPyfunc(), artifacts={"weights": str(other /
                                "model.pt")}, registered_model_name=config.model_name,
                                code_paths=[str(Path(visionflow.__file__).parent)])  # fmt: skip
    tracking.set_alias(config, config.model_name, "champion", "1")
    second = register_current(config)
    assert (second.alias, second.promoted) == ("challenger", False)
    assert "predicts classes ['other_background'" in second.reasons[0] and "register.model_name" in second.reasons[0]
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    assert str(client.get_model_version_by_alias(config.model_name, "champion").version) == "1", "the first stays"
    assert client.get_model_version(config.model_name, second.version).tags["gate.decision"] == "not promoted"
