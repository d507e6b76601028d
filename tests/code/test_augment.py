"""Augmentation through torchvision.transforms.v2: image and mask stay aligned under every geometric transform,
photometric ones leave the mask alone, draws are reproducible from the dataset's generator, and the auto policy
follows the masks' layout."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage

from visionflow.config import AugmentConfig
from visionflow.data.augment import Augment
from visionflow.planning.fingerprint import fingerprint
from visionflow.planning.rules import FULL_AUGMENT_PASSES, GROUP_IMAGES, TILT, augment_policy

IGNORE = 255
PALETTE = torch.tensor(
    [[128, 128, 128], [230, 40, 40], [40, 230, 40], [40, 40, 230], [230, 230, 40]], dtype=torch.uint8
)


def scene(height: int = 96, width: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A mask of random rectangles and discs of four classes on background, and an image that paints each class
    its own colour: the image's edges are exactly the mask's."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.int64)
    rows, cols = np.mgrid[:height, :width]
    for _ in range(10):  # centres uniform over the image (shapes clipped at its edges): no side preferred
        cls = int(rng.integers(1, 5))
        row, col = int(rng.integers(0, height)), int(rng.integers(0, width))
        if rng.random() < 0.5:
            half_h, half_w = int(rng.integers(4, 15)), int(rng.integers(4, 20))
            mask[max(0, row - half_h) : row + half_h, max(0, col - half_w) : col + half_w] = cls
        else:
            mask[(rows - row) ** 2 + (cols - col) ** 2 <= int(rng.integers(5, 15)) ** 2] = cls
    mask_t = torch.from_numpy(mask)
    return PALETTE[mask_t], mask_t


def interior(mask: np.ndarray, margin: int = 2) -> np.ndarray:
    """Pixels whose (2 margin + 1)-square neighbourhood holds their class only."""
    out = np.zeros(mask.shape, bool)
    for value in np.unique(mask):
        out |= ndimage.binary_erosion(mask == value, np.ones((2 * margin + 1,) * 2))  # not the frame
    return out


def assert_aligned(image: torch.Tensor, mask: torch.Tensor) -> None:
    """Away from edges (where bilinear image pixels mix two colours) every pixel has its class's colour, and
    pixels brought in from outside the image are black in the image and ignored in the mask; the image's edges
    lie on the mask's."""
    m, img = mask.numpy(), image.numpy().astype(int)
    inside = interior(m)
    expected = np.where((m == IGNORE)[..., None], 0, PALETTE.numpy()[np.clip(m, 0, 4)])
    assert np.abs(img - expected)[inside].max() <= 1, "image and mask moved apart"
    assert inside.mean() > 0.5, "too few interior pixels to judge"
    # edges: a mask edge lies within 2 px of an image edge (bilinear and nearest sampling of one point differ by up
    # to a pixel each way), and the other way round; the outer frame aside (it mixes in pixels from beyond the view)
    mask_edge = (np.diff(m, axis=0, prepend=m[:1]) != 0) | (np.diff(m, axis=1, prepend=m[:, :1]) != 0)
    down = np.abs(np.diff(img, axis=0, prepend=img[:1])).max(axis=2)
    across = np.abs(np.diff(img, axis=1, prepend=img[:, :1])).max(axis=2)
    image_edge = (down > 40) | (across > 40)  # half the smallest step between two colours
    frame = np.ones(m.shape, bool)
    frame[2:-2, 2:-2] = False
    assert ndimage.distance_transform_edt(~image_edge)[mask_edge & ~frame].max() <= 2
    assert ndimage.distance_transform_edt(~mask_edge)[image_edge & ~frame].max() <= 2


GEOMETRY = {
    "hflip": {"hflip": 1.0},
    "vflip": {"hflip": 0.0, "vflip": 1.0},
    "rotate": {"hflip": 0.0, "rotate": 180.0, "affine": 1.0},
    "zoom out": {"hflip": 0.0, "scale": [0.7, 0.7], "affine": 1.0},
    "zoom in": {"hflip": 0.0, "scale": [1.4, 1.4], "affine": 1.0},
    "everything": {
        **augment_policy(None)[0],
        "vflip": 0.5,
        "rotate": 180.0,
        "affine": 1.0,
        "colour": 0.0,
        "blur": 0.0,
        "noise": 0.0,
    },
}


@pytest.mark.parametrize("name", list(GEOMETRY))
def test_geometry_moves_image_and_mask_together(name: str) -> None:
    augment = Augment(AugmentConfig(**GEOMETRY[name]).model_dump())
    image, mask = scene()
    moved = 0
    for seed in range(6):
        out_image, out_mask = augment(image, mask, IGNORE, torch.Generator().manual_seed(seed))
        assert out_image.shape == image.shape and out_image.dtype == torch.uint8
        assert out_mask.shape == mask.shape and out_mask.dtype == torch.int64
        assert set(out_mask.unique().tolist()) <= {0, 1, 2, 3, 4, IGNORE}, "nearest neighbour: no new ids"
        assert_aligned(out_image, out_mask)
        moved += not torch.equal(out_mask, mask)
    assert moved >= 3
    if name == "hflip":
        assert torch.equal(out_mask, mask.flip(1)) and torch.equal(out_image, image.flip(1))


def test_pixels_from_outside_the_image_are_ignored() -> None:
    image, mask = scene()
    augment = Augment(AugmentConfig(hflip=0.0, scale=(0.7, 0.7), affine=1.0).model_dump())
    out_image, out_mask = augment(image, mask, IGNORE, torch.Generator().manual_seed(0))
    border = out_mask == IGNORE
    assert border[0].all() and border[-1].all() and border[:, 0].all(), "zoomed out: a frame from outside"
    assert 0.3 < float(border.float().mean()) < 0.7  # 1 - 0.7**2 of the pixels, about half
    assert (out_image[border] <= 1).all()


@pytest.mark.parametrize(
    "policy",
    [
        {"brightness": 0.5, "colour": 1.0},
        {"contrast": 0.5, "colour": 1.0},
        {"saturation": 0.5, "colour": 1.0},
        {"gamma": [0.5, 0.6], "colour": 1.0},
        {"blur": 1.0},
        {"noise": 1.0},
    ],
)
def test_photometric_changes_touch_the_image_only(policy: dict) -> None:
    image, mask = scene()
    augment = Augment(AugmentConfig(hflip=0.0, **policy).model_dump())
    out_image, out_mask = augment(image, mask, IGNORE, torch.Generator().manual_seed(1))
    assert torch.equal(out_mask, mask)
    assert out_image.dtype == torch.uint8 and not torch.equal(out_image, image)


def test_draws_come_from_the_given_generator_and_leave_the_global_one_alone() -> None:
    augment = Augment(AugmentConfig(**{**augment_policy(None)[0], "affine": 1.0, "colour": 1.0}).model_dump())
    image, mask = scene()
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = augment(image, mask, IGNORE, torch.Generator().manual_seed(7))
    assert torch.equal(torch.random.get_rng_state(), before)
    again = augment(image, mask, IGNORE, torch.Generator().manual_seed(7))
    other = augment(image, mask, IGNORE, torch.Generator().manual_seed(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    grey_only, none = augment(image, None, IGNORE, torch.Generator().manual_seed(7))  # a classifier's image
    assert none is None and torch.equal(grey_only, first[0])


def layout_masks(sky: bool, left: bool = False, count: int = 40) -> list[np.ndarray]:
    """Masks of scattered shapes; with ``sky``, class 1 always fills the top quarter; with ``left``, class 2
    always holds a band at the left edge."""
    masks = []
    for seed in range(count):
        _, mask = scene(seed=seed)
        m = mask.numpy().copy()
        if sky:
            m[: m.shape[0] // 4] = 1
        if left:
            m[:, : m.shape[1] // 5] = 2
        masks.append(m)
    return masks


def test_auto_policy_reads_the_layout_of_the_masks() -> None:
    classes = ["background", "sky", "road", "car", "sign"]
    free, reason = augment_policy(fingerprint(layout_masks(sky=False), classes, IGNORE))
    assert free["vflip"] == 0.5 and free["hflip"] == 0.5 and free["rotate"] == 180
    assert "no class keeps a side" in reason
    upright, reason = augment_policy(fingerprint(layout_masks(sky=True), classes, IGNORE))
    assert upright["vflip"] == 0.0 and upright["hflip"] == 0.5 and upright["rotate"] == TILT
    assert "sky 0.20 (100% of its images on that side)" in reason and "no vertical flips" in reason
    sided, reason = augment_policy(fingerprint(layout_masks(sky=False, left=True), classes, IGNORE))
    assert sided["hflip"] == 0.0 and sided["vflip"] == 0.5 and sided["rotate"] == TILT
    assert "no left-right flips" in reason
    for policy in (free, upright, sided):  # every policy is a valid written one, and nnU-Net's photometric set
        assert AugmentConfig(**policy).brightness == 0.25 and policy["noise"] == 0.1


def test_a_short_training_gets_left_right_flips_only() -> None:
    classes = ["background", "sky", "road", "car", "sign"]
    free = fingerprint(layout_masks(sky=False), classes, IGNORE)
    assert augment_policy(free, FULL_AUGMENT_PASSES)[0]["rotate"] == 180, "enough passes: the whole set"
    short, reason = augment_policy(free, FULL_AUGMENT_PASSES - 1)
    assert short == {"hflip": 0.5} and "still fitting" in reason
    assert AugmentConfig(**short).scale is None and AugmentConfig(**short).noise == 0, "the rest is off"
    sided = fingerprint(layout_masks(sky=False, left=True), classes, IGNORE)
    assert augment_policy(sided, 10)[0] == {"hflip": 0.0}


def test_images_from_groups_get_the_whole_set_whatever_the_passes() -> None:
    classes = ["background", "sky", "road", "car", "sign"]
    upright = fingerprint(layout_masks(sky=True), classes, IGNORE)
    few = FULL_AUGMENT_PASSES - 1
    grouped, reason = augment_policy(replace(upright, groups=2), few)
    assert grouped == augment_policy(upright, FULL_AUGMENT_PASSES)[0], "the set the passes would have chosen"
    assert grouped["vflip"] == 0.0 and grouped["rotate"] == TILT, "the layout still rules the flips"
    assert "come from 2 group(s)" in reason and f"whatever the passes ({few})" in reason
    alone = replace(upright, groups=upright.images // GROUP_IMAGES + 1)  # fewer than GROUP_IMAGES a group
    assert augment_policy(alone, few)[0] == {"hflip": 0.5}, "groups of single images are no groups"
    assert augment_policy(replace(upright, groups=None), few)[0] == {"hflip": 0.5}
