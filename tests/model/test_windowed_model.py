"""A model trained on crops (of shrunk images) is scored, predicted and served by the same overlapping windows
(of the images shrunk alike): evaluate's scores,
``visionflow predict``'s masks and the served pyfunc's masks are those of one code path; where one window covers
the image, the window policy gives the pad policy's masks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import TINY, make_config, make_meta
from visionflow import registry, tracking, training
from visionflow.distributed import Dist
from visionflow.gate import score_predictions
from visionflow.models import build_model
from visionflow.predict import predict_folder
from visionflow.serving import Predictor, decode_mask
from visionflow.stages import balance, evaluate, prepare, register, train, validate

SPEC = {"size": [32, 32], "policy": "crop", "scale": 0.75}  # crops of the 64 px images shrunk to 48 px
CROPS = TINY | {"train.epochs": 2, "train.input": SPEC, "evaluate.flip": True}


def test_crop_training_is_evaluated_predicted_and_served_by_the_same_windows(workdir: Path) -> None:
    config = make_config(CROPS)
    for stage in (prepare, validate, balance):
        stage.run(config)
    meta = train.run(config)
    assert (meta.input_policy, meta.input_size, meta.overlap, meta.flip, meta.scale) == ("window", (32, 32), 0.5,
                                                                                         True, 0.75)  # fmt: skip
    several = make_config(CROPS | {"train.input": SPEC | {"crops_per_image": 3}})
    one, three = (training.build_session(c, Dist()).train_loader for c in (config, several))
    assert len(three.sampler) == 3 * len(one.sampler) == 3 * len(one.dataset), "an epoch: 3 crops of each image"
    scored = evaluate.run(config)

    val = registry.load_split(config, "val")
    assert all(image.shape[:2] == (64, 64) for image in val.images), "each image, shrunk, is larger than a window"
    predictor = Predictor.from_file(config.paths.weights)
    masks = predictor.predict(val.images)
    assert all(mask.shape == image.shape[:2] for mask, image in zip(masks, val.images, strict=True))
    again = score_predictions(masks, val.truths, "segmentation", len(val.classes), val.ignore_index)
    per_image = pd.read_csv(config.paths.evaluated("val").per_image)
    np.testing.assert_allclose(per_image["miou"], again.per_image, atol=1e-9, err_msg="evaluate scored these masks")
    assert scored.val["miou"] == pytest.approx(float(np.nanmean(again.per_class)), abs=1e-6)

    folder = workdir / "incoming"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(val.images[i]).save(folder / f"img_{i}.png")
    predict_folder(predictor, folder, workdir / "out")
    register.run(config)
    mlflow.set_tracking_uri(tracking.tracking_uri(config))
    served = mlflow.pyfunc.load_model(f"models:/{config.model_name}@champion")
    answered = served.predict(pd.DataFrame({"image": [val.images[i] for i in range(3)]}))
    for i in range(3):
        assert np.array_equal(np.array(Image.open(workdir / "out" / f"img_{i}.png")), masks[i]), "predict"
        assert np.array_equal(decode_mask(answered["mask"][i]), masks[i]), "the served model"


def test_one_window_covering_the_image_gives_the_pad_policy_masks() -> None:
    pad = make_meta("segmentation", ["a", "b", "c"], size=None, policy="pad", encoder="tu-resnet10t")
    model = build_model(pad).eval()
    window = dataclasses.replace(pad, input_size=(96, 128), input_policy="window")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((96, 128), (70, 100), (64, 64))]
    # one at a time: in a batch, pad brings every image to the batch's largest size
    by_pad = Predictor(model, pad, precision="fp32").predict(images, batch_size=1)
    by_window = Predictor(model, window, precision="fp32").predict(images)
    for a, b, image in zip(by_pad, by_window, images, strict=True):
        assert a.shape == image.shape[:2] and np.array_equal(a, b)
