"""The built-in segmentation datasets, generated: deterministic from their seed, so the same params give the same
bytes on every machine.

- ``shapes`` (default): coloured shapes on textured, noisy backgrounds. It is made to need a model rather than a
  threshold: backgrounds cover the same intensities as the shapes, every shape is tinted and noisy, and one class
  (``star``) is rare, as the interesting classes of real data are. Shapes scale with the image.
- ``wires``: large images (``image_size`` 1024 and up) of plates, wires and rivets on the same textured
  backgrounds. Wires are :data:`WIRE_WIDTH` px wide and rivets :data:`RIVET_DIAMETER` px across whatever the
  image size, as thin and tiny structures are in real photographs: shrinking the whole image to a trainable size
  erases them, crops at full resolution keep them. Its definition was fixed before any planner rule was tuned
  on it (issue 13's evidence); change it only with a note of why.

Splits: ``val_fraction`` of the images are val and ``test_fraction`` test (drawn from a stream of their own, so
adding a test split leaves the val split as it was); the rare class is spread over every split.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from visionflow.config import BuiltinConfig

__all__ = [
    "CLASSES",
    "IGNORE_INDEX",
    "RARE_CLASS",
    "RARE_FRACTION",
    "RIVET_DIAMETER",
    "WIRE_CLASSES",
    "WIRE_WIDTH",
    "classes",
    "generate_sample",
    "materialise",
]

CLASSES: tuple[str, ...] = ("background", "disc", "square", "triangle", "cross", "star")
WIRE_CLASSES: tuple[str, ...] = ("background", "plate", "wire", "rivet")
WIRE_WIDTH = 3  # px, at every image size
RIVET_DIAMETER = 7  # px, at every image size
IGNORE_INDEX = 255  # the built-in masks never use it, but the loss and metrics honour it
RARE_CLASS = "star"
RARE_FRACTION = 0.08  # share of images that hold the rare class
# Base hue of each foreground class; jittered per shape so colour alone is a hint, not an answer.
_HUES = {"disc": 0.0, "square": 0.33, "triangle": 0.62, "cross": 0.15, "star": 0.8}


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random waves plus blotches plus pixel noise, in a random colour, spanning all intensities."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    field = np.zeros((size, size), np.float32)
    for _ in range(3):
        fx, fy = rng.uniform(-6, 6, size=2)
        field += np.sin(2 * math.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * math.pi))
    coarse = rng.normal(size=(size // 8, size // 8)).astype(np.float32)
    field += np.kron(coarse, np.ones((8, 8), np.float32))[:size, :size]
    field = (field - field.min()) / (np.ptp(field) + 1e-6)
    tint = rng.uniform(0.2, 1.0, size=3).astype(np.float32)
    rgb = field[..., None] * tint * 255 + rng.normal(0, 18, size=(size, size, 3))
    return rgb


def _hue_to_rgb(hue: float, value: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6) % 6
    return value * (1 - np.clip(np.minimum(k, 4 - k), 0, 1) * 0.8)


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "square":
        corners = [angle + math.pi / 4 + i * math.pi / 2 for i in range(4)]
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in corners]
    if kind == "triangle":
        corners = [angle + i * 2 * math.pi / 3 for i in range(3)]
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in corners]
    if kind == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.45
            a = angle + i * math.pi / 5
            points.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
        return points
    if kind == "cross":
        w = r * 0.35
        arm = [
            (-r, -w),
            (-w, -w),
            (-w, -r),
            (w, -r),
            (w, -w),
            (r, -w),
            (r, w),
            (w, w),
            (w, r),
            (-w, r),
            (-w, w),
            (-r, w),
        ]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in arm]
    raise ValueError(f"no polygon for shape {kind!r}")


def _shape_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    r = rng.uniform(0.1, 0.22) * size
    cx, cy = rng.uniform(r * 0.6, size - r * 0.6, size=2)
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "disc":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, rng.uniform(0, 2 * math.pi)), fill=1)
    return np.asarray(canvas, dtype=bool)


def classes(kind: str) -> tuple[str, ...]:
    """The class names of a built-in dataset kind, by id."""
    return WIRE_CLASSES if kind == "wires" else CLASSES


def _paint(image: np.ndarray, region: np.ndarray, hue: float, value: float, rng: np.random.Generator) -> None:
    """Fill ``region`` with a tinted, shaded, noisy colour."""
    colour = _hue_to_rgb(hue % 1.0, value)
    shade = rng.uniform(0.75, 1.0, size=(*image.shape[:2], 1))
    image[region] = (colour * shade + rng.normal(0, 14, image.shape))[region]


def _wires_sample(index: int, config: BuiltinConfig) -> tuple[np.ndarray, np.ndarray]:
    """Plates (large), wires (long curves WIRE_WIDTH px wide) and rivets (RIVET_DIAMETER px discs)."""
    rng = np.random.default_rng([config.seed, index, 2])
    size = config.image_size
    image = _texture(rng, size)
    mask = np.zeros((size, size), np.uint8)
    layers = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layers)
    for _ in range(int(rng.integers(1, 4))):  # plates: 20-45% of the side
        r = rng.uniform(0.1, 0.22) * size
        cx, cy = rng.uniform(r, size - r, size=2)
        draw.polygon(_polygon("square", cx, cy, r, rng.uniform(0, 2 * math.pi)), fill=1)
    for _ in range(int(rng.integers(2, 6))):  # wires: smooth random curves across the image
        start, heading = rng.uniform(0, size, size=2), rng.uniform(0, 2 * math.pi)
        points = [tuple(start)]
        for _ in range(24):
            heading += rng.normal(0, 0.25)
            step = size / 16
            points.append((points[-1][0] + step * math.cos(heading), points[-1][1] + step * math.sin(heading)))
        draw.line(points, fill=2, width=WIRE_WIDTH)
    radius = RIVET_DIAMETER / 2
    for _ in range(int(rng.integers(10, 30))):  # rivets
        cx, cy = rng.uniform(radius, size - radius, size=2)
        draw.ellipse([cx - radius, cy - radius, cx + radius - 1, cy + radius - 1], fill=3)
    mask[:] = np.asarray(layers)
    for class_id, hue in ((1, 0.55), (2, 0.08), (3, 0.3)):
        _paint(image, mask == class_id, hue + rng.uniform(-0.06, 0.06), rng.uniform(90, 255), rng)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def generate_sample(index: int, config: BuiltinConfig, has_rare: bool) -> tuple[np.ndarray, np.ndarray]:
    """One image and its mask; depends only on (kind, seed, index, has_rare)."""
    if config.kind == "wires":
        return _wires_sample(index, config)
    rng = np.random.default_rng([config.seed, index])
    size = config.image_size
    image = _texture(rng, size)
    mask = np.zeros((size, size), np.uint8)
    common = [c for c in CLASSES[1:] if c != RARE_CLASS]
    kinds = list(rng.choice(common, size=int(rng.integers(2, 5))))
    if has_rare:
        kinds.insert(int(rng.integers(0, len(kinds) + 1)), RARE_CLASS)
    for kind in kinds:
        region = _shape_mask(kind, size, rng)
        hue = (_HUES[kind] + rng.uniform(-0.06, 0.06)) % 1.0
        colour = _hue_to_rgb(hue, rng.uniform(90, 255))
        shaded = colour * rng.uniform(0.75, 1.0, size=(size, size, 1)) + rng.normal(0, 14, (size, size, 3))
        image[region] = shaded[region]
        mask[region] = CLASSES.index(kind)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _splits(config: BuiltinConfig) -> tuple[np.ndarray, np.ndarray]:
    """Each image's split (train, val, test), and which hold the rare class (spread over every split)."""
    rng = np.random.default_rng([config.seed, 7919])
    n = config.num_images
    split = np.full(n, "train", dtype=object)
    split[rng.choice(n, size=max(1, round(n * config.val_fraction)), replace=False)] = "val"
    if config.test_fraction > 0:  # its own stream: the val split stays what it was without a test split
        rest = np.flatnonzero(split == "train")
        chosen = np.random.default_rng([config.seed, 7927]).choice(
            rest, size=max(1, round(n * config.test_fraction)), replace=False
        )
        split[chosen] = "test"
    has_rare = np.zeros(n, bool)
    for name in ("val", "train", "test"):  # val, then train: the order before test splits existed
        members = np.flatnonzero(split == name)
        if len(members):
            count = max(1, math.floor(len(members) * RARE_FRACTION))
            has_rare[rng.choice(members, size=count, replace=False)] = True
    return split, has_rare


def materialise(config: BuiltinConfig, out_dir: Path) -> list[tuple[str, Path, Path]]:
    """Write the dataset as PNGs under ``out_dir``; returns (split, image path, mask path) per image."""
    splits, has_rare = _splits(config)
    written: list[tuple[str, Path, Path]] = []
    for index in range(config.num_images):
        split = str(splits[index])
        image, mask = generate_sample(index, config, bool(has_rare[index]))
        image_path = out_dir / split / "images" / f"{config.kind}_{index:05d}.png"
        mask_path = out_dir / split / "masks" / f"{config.kind}_{index:05d}.png"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "RGB").save(image_path, optimize=False)
        Image.fromarray(mask, "L").save(mask_path, optimize=False)
        written.append((split, image_path, mask_path))
    return written
