"""Data sources: turn ``data.*`` params into a list of (split, image, mask or label) references and a class list.

Segmentation: ``builtin`` (generated shapes) and ``folder`` (images + masks by file name, CamVid preset).
Classification: ``digits`` (scikit-learn's scans), ``imagefolder`` (``<split>/<class>/<image>``) and ``csv``.

Sources only find files; decoding, hashing and counting happen once, in the manifest.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from visionflow.config import Config, DataConfig, MasksConfig, NamesConfig, SplitDirs, parse_colour
from visionflow.data import builtin, digits
from visionflow.errors import SourceError
from visionflow.handoffs import DatasetInfo, MaskCode

__all__ = [
    "IMAGE_SUFFIXES",
    "PRESETS",
    "Preset",
    "SampleRef",
    "collect_samples",
    "mask_code",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"})


@dataclass(frozen=True)
class SampleRef:
    split: str
    image: Path | None  # None: a mask was found without its image
    mask: Path | None = None  # segmentation; None: an image was found without its mask
    label: str | None = None  # classification: the class name as the source gives it
    name: str | None = None  # the row id where the file stem is not unique (class folders, CSV paths)
    region: Path | None = None  # segmentation: the region mask (zero: not scored), where the split has them
    region_expected: bool = False  # the split has a region folder: a sample without its region mask is reported
    # data.groups: the group (a csv source's column value until visionflow.data.groups assigns every sample its
    # group); None: no groups configured
    group: str | None = None
    group_from: str | None = None  # pattern | column | id (neither gave one: the sample is its own group)

    @property
    def id(self) -> str:
        """The manifest's row id: the name, else the file stem."""
        return self.name or (self.image or self.mask).stem  # type: ignore[union-attr]


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


def _matcher(template: str) -> Callable[[Path], str | None]:
    """The sample id a file name holds under a name template (see :class:`NamesConfig`), or None."""
    prefix, suffix = template.split("{id}")
    pattern = re.compile(f"{re.escape(prefix)}(?P<id>.+?){re.escape(suffix)}")
    whole_name = Path(suffix).suffix.lower() in IMAGE_SUFFIXES  # the template names the file type itself

    def match(path: Path) -> str | None:
        found = pattern.fullmatch(path.name if whole_name else path.stem)
        return found["id"] if found else None

    return match


def _images_in(folder: Path, template: str = "{id}", by_stem: bool = True) -> dict[str, Path]:
    """Image files by the sample id their name holds; an id seen twice (x.png and x.jpg) is an error, not a
    silent pick. A file the template does not match keeps its stem as its id (``by_stem``), so it is reported
    unpaired rather than skipped; else it is left out (region folders: a region belongs to a sample by name)."""
    match, found = _matcher(template), {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        sample = match(path) or (path.stem if by_stem else None)
        if sample is None:
            continue
        if sample in found:
            raise SourceError(
                f"{folder}: two files hold the sample '{sample}' ({template}): {found[sample].name}, {path.name}; "
                "keep one"
            )
        found[sample] = path
    return found


def _class_id(target: str | int, classes: tuple[str, ...], ignore_index: int) -> int:
    if target == "ignore" or target == ignore_index:
        return ignore_index
    if isinstance(target, int) and 0 <= target < len(classes):
        return target
    if isinstance(target, str) and target in classes:
        return classes.index(target)
    raise SourceError(
        f"data.masks: {target!r} is neither a class ({', '.join(classes)}), a class id below {len(classes)}, "
        f"'ignore' nor the ignore index {ignore_index}"
    )


def mask_code(masks: MasksConfig, classes: tuple[str, ...], ignore_index: int) -> MaskCode:
    """``data.masks`` with class names resolved to ids (what prepare records in dataset.json)."""
    if masks.values is not None:
        table = tuple((str(value), _class_id(t, classes, ignore_index)) for value, t in sorted(masks.values.items()))
        return MaskCode("values", table)
    if masks.colors is not None:
        rows = ("#{:02x}{:02x}{:02x}".format(*parse_colour(c)) for c in masks.colors)
        targets = (_class_id(t, classes, ignore_index) for t in masks.colors.values())
        return MaskCode("colors", tuple(sorted(zip(rows, targets, strict=True))))
    return MaskCode()


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
            optional = ("test", "val") if data.val_split is not None else ("test",)
            if preset and data.splits is None and split in optional:
                continue  # the preset's test split is optional, and its val where data.val_split carves one
            raise SourceError(f"split '{split}': image folder '{image_dir}' does not exist")
        names = _names_of(data, split, splits)
        images = _images_in(image_dir, names.image)
        masks = _images_in(mask_dir, names.mask) if mask_dir.is_dir() else {}
        region_dir = None if dirs.regions is None else root / dirs.regions
        if region_dir is not None and not region_dir.is_dir():
            raise SourceError(f"split '{split}': region folder '{region_dir}' does not exist")
        regions = _images_in(region_dir, names.region, by_stem=False) if region_dir is not None else {}
        for sample in sorted(images.keys() | masks.keys()):
            region = regions.get(sample)
            samples.append(SampleRef(split, images.get(sample), masks.get(sample), name=sample, region=region,
                                     region_expected=region_dir is not None))  # fmt: skip
    if not samples:
        raise SourceError(f"data.root '{root}': no images found in {', '.join(splits)}")
    code = mask_code(data.masks, classes, ignore_index)
    return samples, DatasetInfo("folder", root.as_posix(), classes, ignore_index, masks=code)


def _names_of(data: DataConfig, split: str, splits: dict[str, SplitDirs]) -> NamesConfig:
    """The file names of one split; names given per split must cover every split read, and name no other."""
    names = data.names_of(split)
    if names is None:
        raise SourceError(f"data.names has no entry for split '{split}'; give one for each of {', '.join(splits)}")
    unknown = sorted(set(data.names) - set(splits)) if isinstance(data.names, dict) else []
    if unknown:
        raise SourceError(f"data.names names split(s) {', '.join(unknown)}; the splits are {', '.join(splits)}")
    return names


def _builtin_samples(config: Config) -> tuple[list[SampleRef], DatasetInfo]:
    out_dir = config.paths.prepared / "builtin"
    written = builtin.materialise(config.data.builtin, out_dir)
    samples = [SampleRef(split, image, mask) for split, image, mask in written]
    own = builtin.classes(config.data.builtin.kind)
    classes = tuple(config.data.classes or own)
    if len(classes) != len(own):
        raise SourceError(f"data.classes has {len(classes)} names; the builtin source has {len(own)}")
    ignore_index = config.data.ignore_index if config.data.ignore_index is not None else builtin.IGNORE_INDEX
    return samples, DatasetInfo("builtin", out_dir.as_posix(), classes, ignore_index)


def _class_folder_samples(root: Path, split: str) -> list[SampleRef]:
    """``root/<class>/<image>``: one sample per image file, labelled by its folder; an image lying outside any
    class folder is kept and reported (no class), never skipped."""
    samples = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            samples.append(SampleRef(split, entry, name=f"{split}/{entry.stem}"))
        elif entry.is_dir():
            for path in sorted(entry.iterdir()):
                if not path.name.startswith(".") and path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    name = f"{split}/{entry.name}/{path.stem}"  # files are often numbered per split
                    samples.append(SampleRef(split, path, label=entry.name, name=name))
    return samples


NO_IGNORE = -100  # classification: every label counts (torch's cross-entropy default)


def _ignore(data: DataConfig) -> int:
    return data.ignore_index if data.ignore_index is not None else NO_IGNORE


def _imagefolder_samples(data: DataConfig, root: Path | None = None) -> tuple[list[SampleRef], DatasetInfo]:
    """Every subfolder of the root is a split, every subfolder of a split a class."""
    root = root or data.root
    if not root.is_dir():
        raise SourceError(f"data.root '{root}' is not a folder (imagefolder: <split>/<class>/<image>)")
    splits = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not splits:
        raise SourceError(f"data.root '{root}': no split folders; expected {root}/train/<class>/<image>")
    samples = [s for split in splits for s in _class_folder_samples(split, split.name)]
    if not samples:
        raise SourceError(f"data.root '{root}': no images in {', '.join(p.name for p in splits)}")
    classes = tuple(data.classes or sorted({s.label for s in samples if s.label is not None}))
    return samples, DatasetInfo("imagefolder", root.as_posix(), classes, _ignore(data), "classification")


def _csv_samples(data: DataConfig) -> tuple[list[SampleRef], DatasetInfo]:
    """One row per image: a path relative to data.root, a class name and a split (columns named in data.csv)."""
    import pandas as pd

    spec, table_path = data.csv, data.root / data.csv.file
    if not table_path.is_file():
        raise SourceError(f"data.csv.file: '{table_path}' not found")
    table = pd.read_csv(table_path, dtype=str, keep_default_na=False)
    group_column = data.groups.column
    wanted = (spec.image, spec.label, spec.split, *([group_column] if group_column else []))
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        see = "data.csv" + (", data.groups.column" if group_column else "")
        has = ", ".join(table.columns)
        raise SourceError(f"{table_path}: no column(s) {', '.join(missing)} (see {see}); it has {has}")
    groups = table[group_column] if group_column else pd.Series("", index=table.index)
    samples = [
        SampleRef(
            split,
            data.root / image,
            label=label or None,
            name=Path(image).with_suffix("").as_posix(),
            group=group or None,
        )
        for image, label, split, group in zip(
            table[spec.image], table[spec.label], table[spec.split], groups, strict=True
        )
    ]
    if not samples:
        raise SourceError(f"{table_path}: no rows")
    classes = tuple(data.classes or sorted({s.label for s in samples if s.label}))
    return samples, DatasetInfo("csv", data.root.as_posix(), classes, _ignore(data), "classification")


def _digits_samples(config: Config) -> tuple[list[SampleRef], DatasetInfo]:
    out_dir = config.paths.prepared / "digits"
    digits.materialise(config.data.digits, out_dir)
    samples, info = _imagefolder_samples(config.data, out_dir)
    if len(info.classes) != len(digits.CLASSES):
        raise SourceError(f"data.classes has {len(info.classes)} names; the digits source has 10")
    return samples, DatasetInfo("digits", info.root, info.classes, info.ignore_index, "classification")


_SOURCES: dict[str, Callable[[Config], tuple[list[SampleRef], DatasetInfo]]] = {
    "builtin": _builtin_samples,
    "folder": lambda config: _folder_samples(config.data),
    "digits": _digits_samples,
    "imagefolder": lambda config: _imagefolder_samples(config.data),
    "csv": lambda config: _csv_samples(config.data),
}


def collect_samples(config: Config) -> tuple[list[SampleRef], DatasetInfo]:
    """Find every (image, mask) pair of the configured source; the builtin source writes its files first."""
    try:
        factory = _SOURCES[config.data.source]
    except KeyError:
        raise SourceError(f"unknown data.source '{config.data.source}'; choose one of {sorted(_SOURCES)}") from None
    return factory(config)
