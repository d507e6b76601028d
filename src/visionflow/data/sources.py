"""Data sources: turn ``data.*`` params into a list of (split, image, mask) references and a class list.

Sources only find files; decoding, hashing and counting happen once, in the manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from visionflow.config import Config, DataConfig, SplitDirs
from visionflow.data import builtin

__all__ = [
    "IMAGE_SUFFIXES",
    "PRESETS",
    "DatasetInfo",
    "Preset",
    "SampleRef",
    "SourceError",
    "collect_samples",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


class SourceError(ValueError):
    """The configured source cannot be read (missing folder, unknown layout)."""


@dataclass(frozen=True)
class SampleRef:
    split: str
    image: Path | None  # None: a mask was found without its image
    mask: Path | None  # None: an image was found without its mask


@dataclass(frozen=True)
class DatasetInfo:
    source: str
    root: str
    classes: tuple[str, ...]
    ignore_index: int


@dataclass(frozen=True)
class Preset:
    classes: tuple[str, ...]
    ignore_index: int
    splits: dict[str, SplitDirs]


PRESETS: dict[str, Preset] = {
    # SegNet's 11-class CamVid split; id 11 marks unlabelled (void) pixels.
    "camvid": Preset(
        classes=(
            "sky",
            "building",
            "pole",
            "road",
            "sidewalk",
            "tree",
            "sign_symbol",
            "fence",
            "car",
            "pedestrian",
            "bicyclist",
        ),
        ignore_index=11,
        splits={
            "train": SplitDirs(images="train", masks="trainannot"),
            "val": SplitDirs(images="val", masks="valannot"),
            "test": SplitDirs(images="test", masks="testannot"),
        },
    ),
}


def _images_in(folder: Path) -> dict[str, Path]:
    """Image files by stem; a stem seen twice (x.png and x.jpg) is an error, not a silent pick."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem in found:
            raise SourceError(
                f"{folder}: two files share the stem '{path.stem}': {found[path.stem].name}, {path.name}; keep one"
            )
        found[path.stem] = path
    return found


def _folder_samples(data: DataConfig) -> tuple[list[SampleRef], DatasetInfo]:
    preset = PRESETS[data.preset] if data.preset else None
    splits = data.splits or (preset.splits if preset else {})
    classes = tuple(data.classes or (preset.classes if preset else ()))
    if not classes:
        raise SourceError("data.classes is empty: list the class names by id, or choose data.preset")
    ignore_index = data.ignore_index if data.ignore_index is not None else (preset.ignore_index if preset else 255)
    root = data.root
    if not root.is_dir():
        raise SourceError(f"data.root '{root}' is not a folder")
    samples: list[SampleRef] = []
    for split, dirs in splits.items():
        image_dir, mask_dir = root / dirs.images, root / dirs.masks
        if not image_dir.is_dir():
            if preset and data.splits is None and split == "test":
                continue  # the preset's test split is optional
            raise SourceError(f"split '{split}': image folder '{image_dir}' does not exist")
        images = _images_in(image_dir)
        masks = _images_in(mask_dir) if mask_dir.is_dir() else {}
        for stem in sorted(images.keys() | masks.keys()):
            samples.append(SampleRef(split, images.get(stem), masks.get(stem)))
    if not samples:
        raise SourceError(f"data.root '{root}': no images found in {', '.join(splits)}")
    return samples, DatasetInfo("folder", root.as_posix(), classes, ignore_index)


def _builtin_samples(config: Config) -> tuple[list[SampleRef], DatasetInfo]:
    out_dir = config.paths.prepared / "builtin"
    written = builtin.materialise(config.data.builtin, out_dir)
    samples = [SampleRef(split, image, mask) for split, image, mask in written]
    classes = tuple(config.data.classes or builtin.CLASSES)
    if len(classes) != len(builtin.CLASSES):
        raise SourceError(f"data.classes has {len(classes)} names; the builtin source has {len(builtin.CLASSES)}")
    ignore_index = config.data.ignore_index if config.data.ignore_index is not None else builtin.IGNORE_INDEX
    return samples, DatasetInfo("builtin", out_dir.as_posix(), classes, ignore_index)


_SOURCES: dict[str, Callable[[Config], tuple[list[SampleRef], DatasetInfo]]] = {
    "builtin": _builtin_samples,
    "folder": lambda config: _folder_samples(config.data),
}


def collect_samples(config: Config) -> tuple[list[SampleRef], DatasetInfo]:
    """Find every (image, mask) pair of the configured source; the builtin source writes its files first."""
    try:
        factory = _SOURCES[config.data.source]
    except KeyError:
        raise SourceError(f"unknown data.source '{config.data.source}'; choose one of {sorted(_SOURCES)}") from None
    return factory(config)
