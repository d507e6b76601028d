"""Torch datasets over manifest rows, for both tasks.

Images (and masks) are decoded once into a cache of two flat uint8 files that every later run, every epoch and
every DDP rank memory-maps: loading costs a page-cache read, never a PNG decode. Transforms run per item on the
uint8 arrays; normalisation happens per batch on the device (:func:`normalise`).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from visionflow.data.masks import read_mask
from visionflow.data.transforms import apply_policy, crop_around, resize, scaled_size
from visionflow.handoffs import DatasetInfo

if TYPE_CHECKING:  # the augmentation (torchvision) is for training only: serving never imports it
    from visionflow.data.augment import Augment

try:  # a faster PNG decoder; PIL decodes everything without it
    import imagecodecs
except ImportError:  # pragma: no cover - a dependency of the project, optional for a served model
    imagecodecs = None

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

__all__ = [
    "DecodedCache",
    "EpochSampler",
    "ImageDataset",
    "decode_rgb",
    "load_rgb",
    "upright",
]


def decode_rgb(data: bytes, name: str | Path | None = None) -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) uint8 RGB; grey, palette and alpha are converted as PIL's ``convert("RGB")``
    does. Errors are PIL's, naming ``name`` when given.

    8-bit RGB, RGBA and palette PNGs go through ``imagecodecs``: the same pixels as PIL, in 3.3 ms instead of 4.6
    for a 360x480 CamVid frame, and like PIL it lets other threads run meanwhile (pyspng, as fast, holds the GIL
    and stalled a second predict stream). Everything else goes through PIL, as does anything imagecodecs refuses
    and any image over PIL's decompression-bomb limit, which PIL then warns about or refuses.
    """
    if imagecodecs is not None and _fast_png(data):
        try:
            pixels = imagecodecs.png_decode(data)
        except Exception:
            pixels = None  # PIL decides, and says what is wrong
        if pixels is not None and pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] in (3, 4):
            return pixels if pixels.shape[2] == 3 else np.ascontiguousarray(pixels[..., :3])
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.array(image.convert("RGB"))
    except UnidentifiedImageError:
        raise UnidentifiedImageError(f"cannot identify image file {str(name or 'data')!r}") from None


def _fast_png(data: bytes) -> bool:
    """An 8-bit RGB, palette or RGBA PNG within PIL's pixel limit (IHDR: width, height, depth, colour type)."""
    if len(data) < 26 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return False
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    limit = Image.MAX_IMAGE_PIXELS
    return data[24] == 8 and data[25] in (2, 3, 6) and (limit is None or width * height <= limit)


def load_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8; grayscale and RGBA inputs are converted to RGB."""
    return decode_rgb(Path(path).read_bytes(), path)


_UPRIGHT = {  # EXIF orientation -> the array operation that shows the image upright (as ImageOps.exif_transpose)
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, k=-1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, k=1),
}


def upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """The image as its EXIF ``orientation`` tag says it is shown (1, or no tag: as stored)."""
    turn = _UPRIGHT.get(int(orientation))
    return image if turn is None else np.ascontiguousarray(turn(image))


def _cache_key(rows: pd.DataFrame, masks: DatasetInfo | None) -> str:
    """Content of the rows: each image's and (segmentation) each mask's and region's path and sha256 from the
    manifest, and how masks become ids (the dataset's mask code and ignore index)."""
    digest = hashlib.sha256(b"v3" + bytes([masks is not None]))
    if masks is not None:
        digest.update(f"{masks.masks.key()}|{masks.ignore_index}".encode())
    for row in rows.itertuples():
        digest.update(f"{row.image_path}|{row.sha256}|{row.orientation}".encode())
        if masks is not None:
            digest.update(f"|{row.mask_path}|{row.mask_sha256}|{row.region_path}|{row.region_sha256}".encode())
    return digest.hexdigest()[:24]


class DecodedCache:
    """Decoded images (and masks) of some manifest rows, in ``images.u8`` / ``masks.u8`` plus an index.

    Built once per distinct set of rows under ``root/<key>/`` (written to a temporary folder and renamed, so a
    killed build leaves nothing half-written); opened read-only with ``np.memmap`` after that.
    """

    def __init__(self, directory: Path) -> None:
        index = np.load(directory / "index.npz")
        self.directory = directory
        self.image_offsets, self.image_shapes = index["image_offsets"], index["image_shapes"]
        self.images = np.memmap(directory / "images.u8", dtype=np.uint8, mode="r")
        self.mask_offsets, self.mask_shapes = index.get("mask_offsets"), index.get("mask_shapes")
        masks = directory / "masks.u8"
        self.masks = np.memmap(masks, dtype=np.uint8, mode="r") if self.mask_offsets is not None else None

    def __len__(self) -> int:
        return len(self.image_offsets)

    def image(self, index: int) -> np.ndarray:
        start, shape = int(self.image_offsets[index]), tuple(int(v) for v in self.image_shapes[index])
        return self.images[start : start + math.prod(shape)].reshape(shape)

    def mask(self, index: int) -> np.ndarray:
        if self.masks is None:
            raise ValueError(f"{self.directory}: this cache holds no masks")
        start, shape = int(self.mask_offsets[index]), tuple(int(v) for v in self.mask_shapes[index])
        return self.masks[start : start + math.prod(shape)].reshape(shape)

    @classmethod
    def open(cls, rows: pd.DataFrame, root: Path, masks: DatasetInfo | None) -> DecodedCache:
        """The cache of ``rows`` (with their masks, read as ``masks`` says; None: images only), building it first
        when there is none."""
        directory = root / _cache_key(rows, masks)
        if not (directory / "index.npz").is_file():
            _build(rows, directory, masks)
        return cls(directory)


def _build(rows: pd.DataFrame, directory: Path, info: DatasetInfo | None) -> None:
    with_masks = info is not None
    partial = directory.with_name(f"{directory.name}.partial-{os.getpid()}")
    partial.mkdir(parents=True, exist_ok=True)
    shapes = np.stack([rows["height"].to_numpy(np.int64), rows["width"].to_numpy(np.int64)], axis=1)
    image_shapes = np.concatenate([shapes, np.full((len(rows), 1), 3)], axis=1)
    image_offsets = np.concatenate([[0], np.cumsum(image_shapes.prod(axis=1))[:-1]])
    images = np.memmap(partial / "images.u8", dtype=np.uint8, mode="w+", shape=(int(image_shapes.prod(1).sum()),))
    index = {"image_offsets": image_offsets, "image_shapes": image_shapes}
    masks = None
    if with_masks:
        mask_offsets = np.concatenate([[0], np.cumsum(shapes.prod(axis=1))[:-1]])
        masks = np.memmap(partial / "masks.u8", dtype=np.uint8, mode="w+", shape=(int(shapes.prod(1).sum()),))
        index |= {"mask_offsets": mask_offsets, "mask_shapes": shapes}

    def put(i: int) -> None:
        row = rows.iloc[i]
        image = load_rgb(row["image_path"])
        if pd.notna(row["orientation"]):
            image = upright(image, row["orientation"])  # validate kept it upright (validate.exif_orientation: apply)
        if image.shape != tuple(image_shapes[i]):
            raise ValueError(f"{row['image_path']}: decoded as {image.shape}, the manifest says {image_shapes[i]}")
        images[image_offsets[i] : image_offsets[i] + image.size] = image.ravel()
        if masks is not None and info is not None:
            region = row.get("region_path")
            mask = read_mask(row["mask_path"], info.masks, info.ignore_index, None if pd.isna(region) else region).ids
            if mask.shape != tuple(shapes[i]) or mask.min(initial=0) < 0 or mask.max(initial=0) > 255:
                raise ValueError(f"{row['mask_path']}: not a {tuple(shapes[i])} mask of ids 0-255")
            masks[index["mask_offsets"][i] : index["mask_offsets"][i] + mask.size] = mask.ravel()

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(tqdm(pool.map(put, range(len(rows))), total=len(rows), desc="decode", unit="img", leave=False))
        images.flush()
        if masks is not None:
            masks.flush()
        np.savez(partial / "index.npz", **index)
        os.replace(partial, directory)
    except OSError:
        if not (directory / "index.npz").is_file():
            raise
    finally:  # a failed build, or one another process (a DDP rank) finished first, leaves nothing behind
        shutil.rmtree(partial, ignore_errors=True)


class ImageDataset(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Items are (uint8 image (h, w, 3), target, sizes).

    The target is an int64 mask (h, w) for segmentation, or the original-resolution mask when
    ``original_masks`` (evaluation scores there), or an int64 class id for classification. ``sizes`` is
    (input height, input width, original height, original width), which :func:`restore` needs.
    """

    def __init__(
        self,
        rows: pd.DataFrame,
        cache: DecodedCache,
        *,
        labels: np.ndarray | None = None,
        policy: str = "resize",
        size: tuple[int, int] | None = None,
        ignore_index: int = 255,
        augment: Augment | None = None,
        seed: int = 0,
        original_masks: bool = False,
        rare: Sequence[int] = (),
        rare_share: float = 0.0,
        scale: float = 1.0,
    ) -> None:
        self.ids = rows["id"].astype(str).tolist()
        self.cache = cache
        self.labels = labels
        self.policy, self.size, self.ignore_index = policy, size, ignore_index
        self.augment, self.seed, self.original_masks = augment, seed, original_masks
        self.rare, self.rare_share = tuple(rare), rare_share  # crop policy: crops centred on these classes
        self.scale = scale  # crop policy: crops are cut from the image shrunk by this
        self.generator = torch.Generator().manual_seed(seed)
        # evaluate's robustness scores: each decoded image (and its index) through a seeded corruption first
        self.corrupt: Callable[[torch.Tensor, int], torch.Tensor] | None = None

    def set_epoch(self, epoch: int, rank: int = 0) -> None:
        """Reseed the augmentation per epoch and rank: a resumed run draws exactly what an unbroken one would."""
        self.generator.manual_seed(self.seed * 1_000_003 + epoch * 7_919 + rank)

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(np.array(self.cache.image(index)))
        if self.corrupt is not None:
            image = self.corrupt(image, index)
        height, width = image.shape[:2]
        mask = None if self.labels is not None else torch.from_numpy(self.cache.mask(index).astype(np.int64))
        random = self.generator if self.augment is not None else None
        if self.policy == "crop" and self.scale != 1:
            image, mask = resize(image, mask, scaled_size(height, width, self.scale))
        if self._rare_crop(random, mask):
            assert mask is not None and self.size is not None and random is not None
            image, moved = crop_around(image, mask, self.size, self.rare, self.ignore_index, random)
        else:
            image, moved = apply_policy(image, mask, self.policy, self.size, self.ignore_index, random)
        if self.augment is not None:
            image, moved = self.augment(image, moved, self.ignore_index, self.generator)
        sizes = torch.tensor([image.shape[0], image.shape[1], height, width])
        if self.labels is not None:
            return image, torch.tensor(int(self.labels[index])), sizes
        return image, (mask if self.original_masks else moved), sizes

    def _rare_crop(self, random: torch.Generator | None, mask: torch.Tensor | None) -> bool:
        """Whether this training crop is to be centred on a rare class (drawn with ``rare_share``)."""
        if self.policy != "crop" or random is None or mask is None or not self.rare or self.rare_share <= 0:
            return False
        return float(torch.rand((), generator=random)) < self.rare_share


class EpochSampler(Sampler[int]):
    """Indices for one epoch, drawn from ``seed + epoch`` and split across DDP ranks.

    With ``weights`` it draws with replacement in proportion to them (repeat-factor sampling); without, it
    shuffles. ``per_item`` draws per item make an epoch (crops: several from each image). Every rank draws the
    same list and takes every ``world``-th entry, so weighted sampling holds across ranks and the epoch number is
    the whole sampler state a checkpoint needs.
    """

    def __init__(self, size: int, seed: int, weights: np.ndarray | None = None, rank: int = 0, world: int = 1,
                 per_item: int = 1) -> None:  # fmt: skip
        self.size, self.seed, self.rank, self.world, self.per_item = size, seed, rank, world, per_item
        self.weights = None if weights is None else torch.tensor(np.asarray(weights, dtype=np.float64))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.size * self.per_item / self.world)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        total = len(self) * self.world
        if self.weights is not None:
            order = torch.multinomial(self.weights, total, replacement=True, generator=generator)
        else:
            order = torch.cat([torch.randperm(self.size, generator=generator) for _ in range(self.per_item)])
            order = order.repeat(math.ceil(total / len(order)))[:total]  # even shares: wrap around
        return iter(order[self.rank :: self.world].tolist())
