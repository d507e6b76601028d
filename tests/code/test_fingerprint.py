"""The data fingerprint: shares, object counts and widths (local thickness) measured on masks whose answer is
known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from visionflow.config import BuiltinConfig
from visionflow.data import builtin
from visionflow.planning.fingerprint import fingerprint, local_thickness, object_widths


def disc(mask: np.ndarray, row: int, col: int, radius: float, value: int) -> None:
    rows, cols = np.ogrid[: mask.shape[0], : mask.shape[1]]
    mask[(rows - row) ** 2 + (cols - col) ** 2 <= radius**2] = value


def test_widths_are_the_thickness_of_each_object_not_its_extent() -> None:
    region = np.zeros((200, 200), bool)
    for i in range(180):  # a diagonal line 3 px thick and 180 px long
        region[10 + i, 10 + i : 13 + i] = True
    square = np.zeros_like(region)
    square[20:60, 120:180] = True  # 40 x 60
    widths = object_widths(region | square)
    assert len(widths) == 2
    line, block = sorted(widths)
    assert 2 <= line <= 4, "a thin diagonal is thin, whatever its bounding box"
    assert 38 <= block <= 42, "a block is as wide as its short side"
    assert len(object_widths(np.zeros((5, 5), bool))) == 0


def test_shares_counts_and_sizes_of_a_known_split() -> None:
    masks = []
    for index in range(4):
        mask = np.zeros((64, 96), np.uint8)
        disc(mask, 20, 20, 10, 1)  # a 21 px disc of class 1 in every image
        if index % 2 == 0:
            disc(mask, 40, 70, 3, 2)  # two 7 px dots of class 2 in half of them
            disc(mask, 10, 70, 3, 2)
        mask[60:, :] = 255  # the bottom rows are unlabelled
        masks.append(mask)
    print_ = fingerprint(masks, ["background", "blob", "dot", "never"], 255)
    assert print_.images == 4 and print_.height == (64, 64, 64) and print_.width == (96, 96, 96)
    assert print_.ignore_share == pytest.approx(4 / 64)
    blob, dot, never = print_.by_name("blob"), print_.by_name("dot"), print_.by_name("never")
    assert blob.image_share == 1.0 and blob.objects_per_image == 1 and 19 <= blob.width_p50 <= 23
    assert dot.image_share == 0.5 and dot.objects_per_image == 2 and 5 <= dot.width_p50 <= 8
    assert never.image_share == 0 and never.width_p50 is None and never.pixel_share == 0
    assert sum(c.pixel_share for c in print_.classes) == pytest.approx(1.0, abs=1e-5)
    assert blob.width_by_pixels == blob.width_p50 and never.width_by_pixels is None, "one object: its own width"


def test_specks_of_label_noise_do_not_make_a_class_thin() -> None:
    """Twenty 1 px specks beside one 41 px disc: most objects are specks, but nearly every pixel is the disc's."""
    mask = np.zeros((96, 96), np.uint8)
    disc(mask, 48, 48, 20, 1)
    for i in range(20):
        mask[2 + 4 * i, 2] = 1
    sky = fingerprint([mask], ["background", "sky"], 255).by_name("sky")
    assert sky.objects_per_image == 21 and sky.width_p50 < 3, "the specks are the median object"
    assert sky.width_by_pixels >= 39, "half the pixels lie in the disc"


def test_the_wires_set_is_thin_at_every_size() -> None:
    """On the built-in wires data, wires measure about WIRE_WIDTH and rivets about RIVET_DIAMETER at 512 and 1024
    px, by object and by pixel, while plates grow with the image: the fingerprint sees what shrinking would lose.

    Tolerances: widths are twice the distance to the centre of the nearest outside pixel, so a line 3 px across
    reads 2.8-4.5 px depending on its angle and how it was rasterised (1.5 px); a 7 px disc reads 7.2 wherever it
    lies, and touching rivets still read as one rivet wide (1 px)."""
    found = {}
    for size in (512, 1024):
        config = BuiltinConfig(kind="wires", image_size=size, num_images=10, seed=3)
        masks = [builtin.generate_sample(i, config, has_rare=False)[1] for i in range(2)]
        found[size] = fingerprint(masks, builtin.WIRE_CLASSES, builtin.IGNORE_INDEX)
    for print_ in found.values():
        assert print_.by_name("wire").width_p50 <= builtin.WIRE_WIDTH + 1.5
        assert abs(print_.by_name("rivet").width_p50 - builtin.RIVET_DIAMETER) <= 1.5
        assert abs(print_.by_name("wire").width_by_pixels - builtin.WIRE_WIDTH) <= 1.5, "by pixels, still thin"
        assert abs(print_.by_name("rivet").width_by_pixels - builtin.RIVET_DIAMETER) <= 1
    assert found[1024].by_name("plate").width_p50 > 1.5 * found[512].by_name("plate").width_p50


def tree() -> tuple[np.ndarray, np.ndarray]:
    """(a tree, its trunk): a trunk 12 px wide and 360 px long, with 2 px branches 90 px long above and below it
    every 20 px, all one connected component."""
    region = np.zeros((220, 400), bool)
    trunk = np.zeros_like(region)
    trunk[104:116, 20:380] = True
    for i in range(18):
        col = 30 + 20 * i
        region[14:104, col : col + 2] = True
        region[116:206, col : col + 2] = True
    return region | trunk, trunk


def test_a_tree_is_as_thin_as_the_branches_that_hold_most_of_its_pixels() -> None:
    """One vessel tree: its largest inscribed disc is its trunk's (12 px), but most of its pixels lie in 2 px
    branches, and the width the planner reads is theirs."""
    region, trunk = tree()
    assert ndimage.label(region, structure=np.ones((3, 3), bool))[1] == 1, "one connected component"
    assert (region & ~trunk).sum() > 0.55 * region.sum(), "the branches hold most of the pixels"
    thickness = local_thickness(region)
    assert thickness.max() == pytest.approx(12), "the largest disc that fits (the old measure) is the trunk's"
    assert np.median(thickness[trunk]) == pytest.approx(12), "the trunk's own pixels are 12 px thick"
    assert np.median(thickness[region & ~trunk]) == pytest.approx(2), "the branches' are 2 px"
    assert (thickness[~region] == 0).all()
    vessel = fingerprint([np.where(region, 1, 0).astype(np.uint8)], ["background", "vessel"], 255).by_name("vessel")
    assert vessel.objects_per_image == 1
    assert vessel.width_by_pixels <= 3, "weighted by pixels, the tree is as thin as its branches"
    assert vessel.width_p50 <= 3, "one object: the median thickness of its pixels"


def thickness_by_definition(region: np.ndarray) -> np.ndarray:
    """Brute force: each pixel's largest covering disc, trying a disc centred on every pixel of the mask with
    the largest radius that stays inside (open: shorter than the distance to the nearest outside pixel)."""
    reach = np.rint(ndimage.distance_transform_edt(region) ** 2).astype(int)  # squared distances are integers
    rows, cols = np.indices(region.shape)
    out = np.zeros(region.shape)
    for row, col in zip(*np.nonzero(region), strict=True):
        inside = (rows - row) ** 2 + (cols - col) ** 2 < reach[row, col]
        np.maximum(out, np.where(inside, 2 * np.sqrt(reach[row, col]), 0), out=out)
    return out


@pytest.mark.parametrize("smoothing", [1.5, 4.0])
def test_local_thickness_follows_its_definition(smoothing: float) -> None:
    """Random blobs (thin and thick, widths up to ~40 px): the fast ladder of radii tested at coarser resolutions
    agrees with the brute-force definition, exactly below 8 px and within a step of the ladder (12.5%) above."""
    region = ndimage.gaussian_filter(np.random.default_rng(7).normal(size=(96, 96)), smoothing) > 0
    exact, fast = thickness_by_definition(region)[region], local_thickness(region)[region]
    thin = exact < 8
    assert thin.sum() > 20
    assert np.isclose(fast[thin], exact[thin]).mean() >= 0.99, "under 8 px: every distance of the grid"
    assert np.mean(np.abs(fast - exact) / exact) < 0.06
    assert abs(np.median(fast) - np.median(exact)) <= 0.125 * np.median(exact)
