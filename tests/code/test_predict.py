"""`visionflow predict` over a folder: streams, batch spans, decoding and the files it writes."""

from __future__ import annotations

import io
import itertools
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.conftest import make_meta
from visionflow.config import ModelConfig
from visionflow.data.dataset import decode_rgb, load_rgb
from visionflow.models import create_classifier, create_segmenter
from visionflow.plots import class_palette
from visionflow.predict import predict_folder, spans
from visionflow.serving import Predictor

CLASSES = ["sky", "road", "car"]


@pytest.mark.parametrize(
    ("count", "batch_size", "streams"),
    [(48, 16, 2), (40, 16, 2), (100, 16, 2), (5, 16, 4), (1, 16, 2), (17, 16, 1), (64, 16, 4), (3, 1, 2)],
)
def test_spans_cover_every_image_once_in_balanced_batches(count: int, batch_size: int, streams: int) -> None:
    batches = spans(count, batch_size, streams)
    assert batches[0][0] == 0 and batches[-1][1] == count
    assert all(a < b for a, b in batches) and all(b == c for (_, b), (c, _) in itertools.pairwise(batches))
    sizes = [b - a for a, b in batches]
    assert max(sizes) <= batch_size and max(sizes) - min(sizes) <= 1
    assert len(batches) % streams == 0 or len(batches) == count  # equal shares, or one image each


def _folder(tmp_path: Path, count: int) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):  # two sizes: a batch of mixed sizes takes the per-image path
        shape = (48, 64, 3) if i % 3 else (40, 56, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"img_{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but nothing after the signature")
    return folder


def _segmenter() -> Predictor:
    torch.manual_seed(0)
    model = create_segmenter(ModelConfig(arch="Unet", encoder="resnet18"), len(CLASSES))
    return Predictor(model, make_meta("segmentation", CLASSES))


@pytest.fixture
def two_threads():
    """Two torch threads for the test, whatever the host has: sharing them out among streams must be undone."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


def test_streams_change_nothing_in_the_outputs(tmp_path: Path, two_threads: int) -> None:
    predictor, folder = _segmenter(), _folder(tmp_path, 7)
    # batch_size 1: the same batches either way, so the outputs must be equal bit for bit
    one = predict_folder(predictor, folder, tmp_path / "one", batch_size=1, streams=1)
    three = predict_folder(predictor, folder, tmp_path / "three", batch_size=1, streams=3)
    assert torch.get_num_threads() == two_threads, "the streams' share of the threads is given back"
    assert (one.images, one.failed) == (three.images, three.failed) == (7, 1)
    for i in range(7):
        a, b = Image.open(tmp_path / "one" / f"img_{i}.png"), Image.open(tmp_path / "three" / f"img_{i}.png")
        assert np.array_equal(np.array(a), np.array(b))
        assert (tmp_path / "three" / f"img_{i}_overlay.jpg").is_file()
    errors = pd.read_csv(tmp_path / "three" / "errors.csv")
    assert list(errors["file"].map(lambda f: Path(f).name)) == ["broken.png"]


def test_masks_are_palette_pngs_of_the_predicted_class_ids(tmp_path: Path) -> None:
    predictor, folder = _segmenter(), _folder(tmp_path, 2)
    predict_folder(predictor, folder, tmp_path / "out", batch_size=1)
    for i in range(2):
        mask = Image.open(tmp_path / "out" / f"img_{i}.png")
        expected = predictor.predict([load_rgb(folder / f"img_{i}.png")])[0]
        assert mask.mode == "P" and np.array_equal(np.array(mask), expected)
        colours = np.array(mask.getpalette()[: 3 * len(CLASSES)]).reshape(-1, 3)
        assert np.array_equal(colours, class_palette(len(CLASSES)).astype(np.uint8))


def test_classification_rows_keep_the_file_order_across_streams(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_classifier(ModelConfig(arch="resnet18"), len(CLASSES))
    predictor = Predictor(model, make_meta("classification", CLASSES, -1, arch="resnet18", encoder=""))
    folder = _folder(tmp_path, 9)
    one = pd.read_csv(predict_folder(predictor, folder, tmp_path / "one", 1, streams=1).output / "predictions.csv")
    four = pd.read_csv(predict_folder(predictor, folder, tmp_path / "four", 1, streams=4).output / "predictions.csv")
    assert list(four["file"]) == sorted(f"img_{i}.png" for i in range(9))
    pd.testing.assert_frame_equal(one, four)


def test_a_failing_stream_stops_the_others_and_gives_the_threads_back(tmp_path: Path, two_threads: int) -> None:
    predictor, folder = _segmenter(), _folder(tmp_path, 6)
    calls = []

    def broken(images, batch_size=16):
        calls.append(len(images))
        raise RuntimeError("model exploded")

    predictor.predict = broken
    with pytest.raises(RuntimeError, match="model exploded"):
        predict_folder(predictor, folder, tmp_path / "out", batch_size=1, streams=2)
    assert len(calls) <= 2, "each stream stops at its first failure, not after all six batches"
    assert torch.get_num_threads() == two_threads
    with pytest.raises(ValueError, match="--streams"):
        predict_folder(predictor, folder, tmp_path / "out", batch_size=1, streams=0)


def test_ctrl_c_stops_the_streams_after_the_batch_in_hand(tmp_path: Path, two_threads: int) -> None:
    predictor, folder = _segmenter(), _folder(tmp_path, 8)
    calls = []
    real = predictor.predict

    delivered = threading.Event()

    def on_ctrl_c(signum: int, frame: object) -> None:  # Python's own handler, but one the stream can wait for
        delivered.set()
        raise KeyboardInterrupt

    def interrupted(images, batch_size=16):
        calls.append(len(images))
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, delivered to the main thread waiting on the streams
            assert delivered.wait(30), "the main thread took the signal"  # however busy the machine is
        return real(images, batch_size)

    predictor.predict = interrupted
    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        with pytest.raises(KeyboardInterrupt):
            predict_folder(predictor, folder, tmp_path / "out", batch_size=1, streams=2)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(calls) < 8, "the remaining batches are not run"
    assert torch.get_num_threads() == two_threads


def _png(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def _kinds() -> dict[str, bytes]:
    rgb = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    rgba = Image.fromarray(np.dstack([rgb, rgb[..., :1]]))
    jpeg = io.BytesIO()
    Image.fromarray(rgb).save(jpeg, format="JPEG")
    return {
        "rgb": _png(Image.fromarray(rgb)),
        "rgba": _png(rgba),
        "rgb with a transparent colour": _png(Image.fromarray(rgb), transparency=(1, 2, 3)),
        "palette": _png(Image.fromarray(rgb).convert("P")),
        "grey": _png(Image.fromarray(rgb[..., 0])),
        "grey with alpha": _png(rgba.convert("LA")),
        "1 bit": _png(Image.fromarray(rgb[..., 0]).convert("1")),
        "16 bit grey": _png(Image.fromarray(rgb[..., 0].astype(np.uint16) * 7)),
        "jpeg": jpeg.getvalue(),
    }


FAST = ("rgb", "rgba", "rgb with a transparent colour", "palette")  # the PNGs imagecodecs decodes


def test_decode_rgb_gives_pil_pixels_for_every_kind_of_image(monkeypatch: pytest.MonkeyPatch) -> None:
    imagecodecs = pytest.importorskip("imagecodecs")
    decoded = []
    real = imagecodecs.png_decode
    monkeypatch.setattr(imagecodecs, "png_decode", lambda data: decoded.append(data) or real(data))
    for kind, data in _kinds().items():
        expected = np.array(Image.open(io.BytesIO(data)).convert("RGB"))
        got = decode_rgb(data)
        assert got.dtype == np.uint8 and got.shape == (37, 53, 3) and got.flags.c_contiguous, kind
        assert np.array_equal(got, expected), kind
        assert (decoded[-1:] == [data]) == (kind in FAST), f"{kind}: the fast path is taken exactly for {FAST}"


def test_decode_rgb_falls_back_to_pil(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from visionflow.data import dataset

    kinds = _kinds()
    expected = np.array(Image.open(io.BytesIO(kinds["rgb"])).convert("RGB"))
    monkeypatch.setattr(dataset, "imagecodecs", None)  # a served model without imagecodecs installed
    assert np.array_equal(decode_rgb(kinds["rgb"]), expected)
    imagecodecs = pytest.importorskip("imagecodecs")
    monkeypatch.setattr(dataset, "imagecodecs", imagecodecs)

    def refuses(data):
        raise RuntimeError("refused")

    monkeypatch.setattr(imagecodecs, "png_decode", refuses)
    assert np.array_equal(decode_rgb(kinds["rgb"]), expected)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # a decompression bomb is PIL's to refuse
    with pytest.raises(Image.DecompressionBombError):
        decode_rgb(kinds["rgb"])
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(kinds["rgb"][:300])
    monkeypatch.undo()
    with pytest.raises(OSError, match=r"truncated|broken"):
        load_rgb(truncated)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image")
    with pytest.raises(OSError, match=r"garbage\.png"):
        load_rgb(garbage)
