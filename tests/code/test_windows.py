"""Sliding-window inference: the windows cover the image, the blend is a weighted mean, one window is the whole
image, flip TTA averages the two views, and scaled windows score the shrunk image."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from visionflow.data.transforms import apply_policy, normalise, restore
from visionflow.windows import Windows, gaussian_weights, sliding_window, window_starts


def as_forward(model: nn.Module):
    model.eval()

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return model(normalise(batch))

    return forward


def image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=generator)


def conv_model(kernel: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, kernel, padding=kernel // 2), nn.ReLU(), nn.Conv2d(8, 4, 1))


@pytest.mark.parametrize(("length", "window", "overlap"), [(480, 320, 0.5), (1000, 256, 0.5), (700, 256, 0.25)])
def test_windows_start_at_both_edges_and_overlap_at_least_as_asked(length: int, window: int, overlap: float) -> None:
    starts = window_starts(length, window, overlap)
    assert starts[0] == 0 and starts[-1] + window == length
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps and max(gaps) <= window * (1 - overlap), gaps


def test_one_window_where_it_covers_the_length() -> None:
    assert window_starts(200, 256, 0.5) == [0] and window_starts(256, 256, 0.5) == [0]
    with pytest.raises(ValueError, match="overlap"):
        window_starts(500, 256, 1.0)


def test_gaussian_weights_peak_in_the_middle_and_never_reach_zero() -> None:
    weights = gaussian_weights(64, 96)
    assert weights.shape == (64, 96) and float(weights.max()) == 1.0 and float(weights.min()) > 0
    assert float(weights[32, 48]) > float(weights[32, 80]) > float(weights[32, 95])
    assert torch.equal(weights, weights.flip(0)) and torch.equal(weights, weights.flip(1))


def test_one_window_over_the_image_is_the_whole_image_pad_output() -> None:
    forward, picture = as_forward(conv_model()), image(70, 90)
    padded = torch.zeros(96, 96, 3, dtype=torch.uint8)
    padded[:70, :90] = picture
    with torch.inference_mode():
        whole = forward(padded[None])[0, :, :70, :90]
    assert torch.equal(sliding_window(forward, picture, (128, 128)), whole)


def test_a_pointwise_model_gives_the_same_logits_through_any_windows() -> None:
    """A 1x1 model's logits at a pixel depend on that pixel alone, so the blend of overlapping windows (a weighted
    mean of equal values) must give back the whole-image logits."""
    forward, picture = as_forward(conv_model(kernel=1)), image(200, 300)
    with torch.inference_mode():
        whole = forward(picture[None])[0]
    tiled = sliding_window(forward, picture, (64, 96), overlap=0.5, batch_size=3)
    assert tiled.shape == (4, 200, 300)
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)


def test_windows_blend_by_gaussian_weights() -> None:
    """A model that answers each window with a constant: the blend at a pixel is the weight-averaged constant of the
    windows holding it, so pixels seen by one window only carry that window's value."""
    calls: list[int] = []

    def forward(batch: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(batch), 1, *batch.shape[1:3])
        for i in range(len(batch)):
            out[i] = float(len(calls))
            calls.append(i)
        return out

    logits = sliding_window(forward, image(64, 160), (64, 64), overlap=0.5, batch_size=2)
    assert len(calls) == len(window_starts(160, 64, 0.5)) == 4
    assert float(logits[0, 0, 0]) == 0.0 and float(logits[0, 0, -1]) == 3.0, "edges belong to one window each"
    middle = logits[0, 32, 33:63]
    assert float(middle.min()) > 0.0 and float(middle.max()) < 1.0, "pixels shared by windows 0 and 1 are mixed"
    assert torch.all(middle[1:] >= middle[:-1]), "moving right, the second window's weight grows"


def test_flip_tta_is_the_mean_of_the_image_and_its_mirror() -> None:
    forward, picture = as_forward(conv_model(seed=3)), image(64, 64, seed=1)
    plain = sliding_window(forward, picture, (64, 64))
    mirrored = sliding_window(forward, picture.flip(1), (64, 64)).flip(2)
    flipped = sliding_window(forward, picture, (64, 64), flip=True)
    torch.testing.assert_close(flipped, (plain + mirrored) / 2)
    assert not torch.allclose(flipped, plain), "an asymmetric model gives another answer on the mirror"


def test_an_axis_shorter_than_the_window_is_scored_whole_along_it() -> None:
    forward, picture = as_forward(conv_model(kernel=1)), image(40, 300)
    with torch.inference_mode():
        whole = forward(picture[None])[0]
    tiled = sliding_window(forward, picture, (128, 128))
    assert tiled.shape == (4, 40, 300)
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)


def test_scaled_windows_score_the_shrunk_image_as_the_resize_policy_does() -> None:
    """``scale`` shrinks the image as training shrank it before cropping; where one window covers the shrunk image,
    that is the resize policy at the shrunk size, logits brought back to full size."""
    forward, picture = as_forward(conv_model(seed=2)), image(128, 192)
    shrunk, _ = apply_policy(picture, None, "resize", (64, 96), 255)
    with torch.inference_mode():
        resized = restore(forward(shrunk[None]), (64, 96, 128, 192), "resize")[0]
    scaled = Windows((64, 96), scale=0.5).logits(forward, picture)
    assert scaled.shape == (4, 128, 192)
    torch.testing.assert_close(scaled, resized)
    pointwise = as_forward(conv_model(kernel=1))
    with torch.inference_mode():
        whole = restore(pointwise(shrunk[None]), (64, 96, 128, 192), "resize")[0]
    tiled = Windows((32, 32), scale=0.5).logits(pointwise, picture)  # 3 x 5 windows of the 64x96 shrunk image
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)
    assert Windows.of("window", (32, 32), 0.5, False, 0.5) == Windows((32, 32), 0.5, False, 0.5)
