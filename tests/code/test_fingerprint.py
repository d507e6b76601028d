"""The data fingerprint: shares, object counts and widths measured on masks whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from visionflow.config import BuiltinConfig
from visionflow.data import builtin
from visionflow.planning.fingerprint import fingerprint, object_widths


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
    px, while plates grow with the image: the fingerprint sees what shrinking would lose."""
    found = {}
    for size in (512, 1024):
        config = BuiltinConfig(kind="wires", image_size=size, num_images=10, seed=3)
        masks = [builtin.generate_sample(i, config, has_rare=False)[1] for i in range(2)]
        found[size] = fingerprint(masks, builtin.WIRE_CLASSES, builtin.IGNORE_INDEX)
    for print_ in found.values():
        assert print_.by_name("wire").width_p50 <= builtin.WIRE_WIDTH + 1.5
        assert abs(print_.by_name("rivet").width_p50 - builtin.RIVET_DIAMETER) <= 1.5
        assert print_.by_name("wire").width_by_pixels <= builtin.WIRE_WIDTH + 1.5, "weighted by pixels, still thin"
    assert found[1024].by_name("plate").width_p50 > 1.5 * found[512].by_name("plate").width_p50
