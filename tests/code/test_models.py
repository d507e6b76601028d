from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.conftest import make_meta
from visionflow.config import ModelConfig
from visionflow.errors import MissingInput
from visionflow.models import ModelError, create_classifier, create_model, create_segmenter, load_model, save_model


def test_unknown_architecture_lists_valid_names() -> None:
    with pytest.raises(ModelError) as err:
        create_segmenter(ModelConfig(arch="Unett"), num_classes=3)
    assert "Unet" in str(err.value) and "FPN" in str(err.value) and "Did you mean" in str(err.value)


def test_unknown_encoder_lists_valid_names_and_timm_hint() -> None:
    with pytest.raises(ModelError) as err:
        create_segmenter(ModelConfig(encoder="resnet19"), num_classes=3)
    assert "resnet18" in str(err.value) and "tu-" in str(err.value)


def test_unknown_timm_model() -> None:
    with pytest.raises(ModelError, match="timm model"):
        create_segmenter(ModelConfig(encoder="tu-not_a_model_at_all"), num_classes=3)


@pytest.mark.parametrize(
    "arch,encoder", [("Unet", "resnet18"), ("FPN", "tu-resnet10t"), ("unet", "tu-mobilenetv3_small_050")]
)
def test_architectures_and_encoders_build(arch: str, encoder: str) -> None:
    model = create_segmenter(ModelConfig(arch=arch, encoder=encoder), num_classes=4).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 4, 64, 64)


def test_save_and_load_round_trip_with_weights_only(tmp_path: Path) -> None:
    config = ModelConfig(encoder="tu-resnet10t")
    model = create_segmenter(config, num_classes=3).eval()
    written = replace(make_meta("segmentation", ["a", "b", "c"], encoder="tu-resnet10t"), metric="val_miou", score=0.5)
    save_model(model, tmp_path / "m.pt", written)
    torch.load(tmp_path / "m.pt", weights_only=True)  # must not need pickle
    loaded, meta = load_model(tmp_path / "m.pt")
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
    assert meta == written and meta.classes == ("a", "b", "c") and meta.input_size == (32, 32)


def test_local_encoder_weights_are_loaded(tmp_path: Path) -> None:
    donor = create_segmenter(ModelConfig(encoder="tu-resnet10t"), num_classes=3)
    torch.save(donor.encoder.state_dict(), tmp_path / "encoder.pt")
    model = create_segmenter(ModelConfig(encoder="tu-resnet10t", weights_path=tmp_path / "encoder.pt"), 3)
    for (name, a), b in zip(donor.encoder.state_dict().items(), model.encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_encoder_weights_that_do_not_fit_are_an_error(tmp_path: Path) -> None:
    torch.save({"something.else": torch.zeros(3)}, tmp_path / "w.pt")
    with pytest.raises(ModelError, match="no tensor matches"):
        create_segmenter(ModelConfig(encoder="tu-resnet10t", weights_path=tmp_path / "w.pt"), 3)


@pytest.mark.parametrize("arch", ["UnetPlusPlus", "DeepLabV3Plus", "Segformer", "Linknet", "PSPNet", "MAnet"])
def test_every_common_smp_architecture_builds_by_name(arch: str) -> None:
    model = create_segmenter(ModelConfig(arch=arch, encoder="tu-resnet10t"), num_classes=3).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_two_classes_make_a_one_channel_binary_segmenter() -> None:
    model = create_model(ModelConfig(encoder="tu-resnet10t"), "segmentation", num_classes=2).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)


@pytest.mark.parametrize("name", ["resnet10t", "mobilenetv3_small_050", "convnext_atto"])
def test_any_timm_classifier_builds_by_name(name: str) -> None:
    model = create_model(ModelConfig(arch=name), "classification", num_classes=7).eval()
    with torch.inference_mode():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_unknown_classifier_lists_close_timm_names() -> None:
    with pytest.raises(ModelError, match=r"unknown timm model 'resnet1000'.*resnet10t"):
        create_classifier(ModelConfig(arch="resnet1000"), num_classes=3)


def test_whole_model_weights_load_exactly_and_mismatches_are_named(tmp_path: Path) -> None:
    config = ModelConfig(encoder="tu-resnet10t")
    donor = create_segmenter(config, num_classes=3)
    save_model(donor, tmp_path / "model.pt", make_meta("segmentation", ["a", "b", "c"], encoder="tu-resnet10t"))
    scoped = config.model_copy(update={"weights_path": tmp_path / "model.pt", "weights_scope": "model"})
    model = create_segmenter(scoped, num_classes=3)
    assert all(torch.equal(a, b) for a, b in zip(donor.state_dict().values(), model.state_dict().values(), strict=True))
    with pytest.raises(ModelError, match="do not fit the whole model"):
        create_segmenter(scoped, num_classes=5)


def test_classifier_backbone_weights_skip_the_head(tmp_path: Path) -> None:
    donor = create_classifier(ModelConfig(arch="resnet10t"), num_classes=10)
    torch.save(donor.state_dict(), tmp_path / "backbone.pt")
    model = create_classifier(ModelConfig(arch="resnet10t", weights_path=tmp_path / "backbone.pt"), num_classes=4)
    assert torch.equal(model.conv1[0].weight, donor.conv1[0].weight)
    assert model.get_classifier().out_features == 4


def test_a_model_of_another_schema_names_the_stage_to_run(tmp_path: Path) -> None:
    model = create_segmenter(ModelConfig(encoder="tu-resnet10t"), num_classes=3)
    old = {"task": "segmentation", "arch": "Unet", "encoder": "tu-resnet10t", "classes": ["a", "b", "c"]}
    torch.save({"state_dict": model.state_dict(), "meta": old}, tmp_path / "model.pt")  # before the schema
    with pytest.raises(
        MissingInput, match=r"model\.pt: model of schema 1, this visionflow reads schema 2.*dvc repro train"
    ):
        load_model(tmp_path / "model.pt")
    with pytest.raises(MissingInput, match=r"missing\.pt: model not found; run `dvc repro train`"):
        load_model(tmp_path / "missing.pt")
