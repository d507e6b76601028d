"""Input policies, mapping logits back to the original resolution, batching mixed sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from visionflow.data.dataset import EpochSampler, ImageDataset
from visionflow.data.transforms import (
    apply_policy,
    decide,
    normalise,
    pad_collate,
    resize,
    restore,
    restore_decide,
    round_up,
)


def sample(height: int = 45, width: int = 70) -> tuple[torch.Tensor, torch.Tensor]:
    """An image whose red channel encodes its mask, so any geometric mismatch between them shows."""
    mask = torch.randint(0, 5, (height, width))
    image = torch.stack([mask * 50, torch.randint(0, 255, (height, width)), mask * 10], dim=-1).to(torch.uint8)
    return image, mask


def assert_aligned(image: torch.Tensor, mask: torch.Tensor, ignore: int = 255) -> None:
    labelled = mask != ignore
    assert torch.equal(image[..., 0][labelled].long(), mask[labelled] * 50)


@pytest.mark.parametrize("policy", ["resize", "pad", "crop"])
def test_policies_reach_the_input_size_and_keep_image_and_mask_aligned(policy: str) -> None:
    image, mask = sample()
    out_image, out_mask = apply_policy(image, mask, policy, (64, 96), 255, torch.Generator().manual_seed(1))
    assert out_image.shape == (64, 96, 3) and out_mask.shape == (64, 96)
    if policy != "resize":  # nearest-neighbour masks vs bilinear images only agree exactly without resampling
        assert_aligned(out_image, out_mask)
    if policy == "pad":
        assert (out_mask[45:] == 255).all() and (out_image[45:] == 0).all(), "padding is ignored, never a class"


def test_pad_without_a_size_rounds_up_to_the_encoder_stride() -> None:
    image, mask = sample(45, 70)
    out_image, out_mask = apply_policy(image, mask, "pad", None, 255)
    assert out_image.shape[:2] == (64, 96) == (round_up(45), round_up(70))
    assert torch.equal(out_mask[:45, :70], mask)


@pytest.mark.parametrize("policy", ["resize", "pad"])
def test_restore_maps_logits_back_to_the_original_mask_size(policy: str) -> None:
    logits = torch.randn(2, 3, 64, 96)
    restored = restore(logits, (64, 96, 45, 70), policy)
    assert restored.shape == (2, 3, 45, 70)
    if policy == "pad":
        assert torch.equal(restored, logits[..., :45, :70])


def test_restore_drops_the_batch_padding_before_resizing() -> None:
    logits = torch.zeros(1, 1, 64, 64)
    logits[..., :48, :] = 1.0  # the input was 48 rows; 16 rows of collate padding below it
    assert restore(logits, (48, 64, 24, 32), "resize").min() == 1.0


@pytest.mark.parametrize("channels", [1, 3, 12])
@pytest.mark.parametrize(("sizes", "policy"), [((40, 56, 61, 90), "resize"), ((40, 56, 23, 37), "resize"),
                                               ((40, 56, 35, 50), "pad"), ((40, 56, 40, 56), "resize")])  # fmt: skip
def test_restore_decide_equals_deciding_on_the_restored_logits(channels, sizes, policy) -> None:
    generator = torch.Generator().manual_seed(channels)
    # smooth regions with boundaries, plus fine noise so boundaries are ragged (the case the shortcut must get right)
    coarse = F.interpolate(torch.randn(3, channels, 5, 7, generator=generator), size=(44, 64), mode="bilinear")
    logits = 3 * coarse + 0.3 * torch.randn(3, channels, 44, 64, generator=generator)  # 44x64: batch padding too
    for threshold in (0.3, 0.5):
        expected = decide(restore(logits, sizes, policy), threshold)
        got = restore_decide(logits, sizes, policy, threshold)
        assert got.shape == expected.shape == (3, sizes[2], sizes[3])
        assert got.dtype == torch.uint8 and torch.equal(got.long(), expected)
    assert (
        restore_decide(logits.contiguous(memory_format=torch.channels_last), sizes, policy)
        .long()
        .equal(decide(restore(logits, sizes, policy)))
    )
    # bf16 logits, as a bf16 model returns them: the ids of their fp32 restoration, but where bf16's coarse values
    # tie exactly and the two ways of mixing round differently (at most a near-tie, and rare)
    reduced = logits.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    restored = restore(reduced.float(), sizes, policy)
    got, expected = restore_decide(reduced, sizes, policy).long(), decide(restored)
    differ = got != expected
    if channels == 1:
        margin = (restored[:, 0].sigmoid() - 0.5).abs()
    else:
        margin = (restored.gather(1, got[:, None]) - restored.gather(1, expected[:, None])).abs()[:, 0]
    assert differ.float().mean() < 1e-3 and (margin[differ] < 1e-4).all()


def test_restore_decide_on_noise_and_on_many_classes() -> None:
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 4, 32, 40, generator=generator)  # nearly every pixel a boundary: the full path
    assert (
        restore_decide(noise, (32, 40, 50, 70), "resize")
        .long()
        .equal(decide(restore(noise, (32, 40, 50, 70), "resize")))
    )
    coarse = F.interpolate(torch.randn(1, 300, 4, 5, generator=generator), size=(32, 40), mode="bilinear")
    got = restore_decide(coarse, (32, 40, 45, 61), "resize")  # more classes than uint8 holds: int64 ids
    assert got.dtype == torch.long and got.equal(decide(restore(coarse, (32, 40, 45, 61), "resize")))
    assert got.max() > 255


def test_uint8_resize_is_within_one_grey_level_of_the_float_path() -> None:
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    for size in [(64, 96), (128, 160)]:  # shrink (antialiased) and enlarge
        fast, _ = resize(image, None, size)
        reference, _ = resize(image.float(), None, size)
        assert fast.dtype == torch.uint8 and fast.shape == (*size, 3)
        assert (fast.int() - reference.int()).abs().max() <= 1


def test_normalise_matches_the_encoder_statistics() -> None:
    images = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expected = ((images.float() / 255 - mean) / std).permute(0, 3, 1, 2)
    assert torch.allclose(normalise(images), expected, atol=1e-5)


def test_collate_pads_mixed_sizes_with_the_ignore_index() -> None:
    items = []
    for height, width in ((30, 40), (50, 20)):
        image, mask = sample(height, width)
        items.append((image, mask, torch.tensor([height, width, height, width])))
    images, masks, sizes = pad_collate(items, ignore_index=255)
    assert images.shape == (2, 64, 64, 3) and masks.shape == (2, 64, 64)
    assert (masks[0, 30:] == 255).all() and (masks[1, :, 20:] == 255).all()
    assert sizes.tolist() == [[30, 40, 30, 40], [50, 20, 50, 20]]


def test_epoch_sampler_splits_one_weighted_draw_across_ranks() -> None:
    weights = np.array([1.0, 1.0, 8.0, 1.0, 1.0, 1.0, 1.0])
    single = list(EpochSampler(7, seed=5, weights=weights))
    shards = [EpochSampler(7, seed=5, weights=weights, rank=r, world=2) for r in range(2)]
    drawn = [list(s) for s in shards]
    assert len(drawn[0]) == len(drawn[1]) == 4
    merged = EpochSampler(7, seed=5, weights=weights, world=2)  # the list both ranks split
    full = torch.multinomial(merged.weights, 8, replacement=True, generator=torch.Generator().manual_seed(5_000_015))
    assert sorted(drawn[0] + drawn[1]) == sorted(full.tolist())
    assert len(single) == 7
    counts = np.bincount([i for e in range(200) for i in _epoch(shards[0], e) + _epoch(shards[1], e)], minlength=7)
    assert counts[2] / counts.sum() == pytest.approx(8 / 14, abs=0.05), "weighted sampling holds across ranks"


def _epoch(sampler: EpochSampler, epoch: int) -> list[int]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_epoch_sampler_depends_only_on_seed_and_epoch() -> None:
    a, b = EpochSampler(20, seed=1), EpochSampler(20, seed=1)
    assert _epoch(a, 3) == _epoch(b, 3) and _epoch(a, 3) != _epoch(a, 4)
    assert sorted(_epoch(a, 2)) == list(range(20)), "without weights: a permutation"


def test_several_crops_per_image_draw_each_image_that_often_an_epoch_in_fresh_orders() -> None:
    sampler = EpochSampler(6, seed=2, per_item=3)
    drawn = _epoch(sampler, 1)
    assert len(sampler) == len(drawn) == 18 and np.bincount(drawn).tolist() == [3] * 6
    assert drawn[:6] != drawn[6:12], "each round of the images in its own order"
    shards = [_epoch(EpochSampler(6, seed=2, rank=r, world=4, per_item=3), 1) for r in range(4)]
    counts = np.bincount([i for shard in shards for i in shard], minlength=6)
    assert {len(s) for s in shards} == {5} and counts.sum() == 20 and counts.min() == 3, "18 draws, wrapped to 4x5"


def test_a_crop_around_a_rare_class_always_holds_it_and_stays_inside_the_image() -> None:
    from visionflow.data.transforms import crop_around

    rows, cols = torch.meshgrid(torch.arange(100), torch.arange(120), indexing="ij")
    image = torch.stack([rows, cols, torch.zeros_like(rows)], dim=2).to(torch.uint8)  # each pixel holds its place
    mask = torch.zeros(100, 120, dtype=torch.long)
    mask[90:93, 5:8] = 4  # one tiny object of the rare class near a corner
    generator = torch.Generator().manual_seed(0)
    corners = set()
    for _ in range(50):
        crop, crop_mask = crop_around(image, mask, (32, 32), [4, 5], 255, generator)
        assert crop.shape == (32, 32, 3) and bool((crop_mask == 4).any()), "the rare object is in every window"
        top, left = int(crop[0, 0, 0]), int(crop[0, 0, 1])  # where the window's first pixel came from
        assert torch.equal(image[top : top + 32, left : left + 32], crop) and torch.equal(
            mask[top : top + 32, left : left + 32], crop_mask
        )
        corners.add((top, left))
    assert len(corners) > 10, "the window moves around the object"
    none = torch.zeros(100, 120, dtype=torch.long)
    crop, crop_mask = crop_around(image, none, (32, 32), [4], 255, generator)
    assert crop.shape == (32, 32, 3) and crop_mask.shape == (32, 32), "no rare class: a random window"


class _Decoded:
    """A decode cache holding given arrays."""

    def __init__(self, image: np.ndarray, mask: np.ndarray) -> None:
        self.image, self.mask = (lambda _: image), (lambda _: mask)

    def __len__(self) -> int:
        return 1


def test_scaled_crops_are_cut_from_the_shrunk_image_and_mask() -> None:
    import pandas as pd

    image, mask = sample(128, 160)
    rows = pd.DataFrame({"id": ["a"]})
    shrunk, shrunk_mask = resize(image, mask, (64, 80))
    centred = ImageDataset(rows, _Decoded(image.numpy(), mask.numpy()), policy="crop", size=(32, 32), scale=0.5)
    crop, crop_mask, sizes = centred[0]  # no augmentation: the centred crop
    assert torch.equal(crop, shrunk[16:48, 24:56]) and torch.equal(crop_mask, shrunk_mask[16:48, 24:56])
    assert sizes.tolist() == [32, 32, 128, 160]
    whole = ImageDataset(rows, _Decoded(image.numpy(), mask.numpy()), policy="crop", size=(64, 80), scale=0.5)
    assert torch.equal(whole[0][0], shrunk) and torch.equal(whole[0][1], shrunk_mask), "a crop the shrunk size"
