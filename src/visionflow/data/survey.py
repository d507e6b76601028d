"""``visionflow init``: look at a dataset folder and say how the pipeline should read it.

The survey finds the split folders and which hold images, masks or region masks (by their names: ``train``,
``val``, ``test`` and the words datasets use, such as ``images``, ``masks``, ``labels``, ``annot``, ``roi``),
the file-name templates that pair an image with its mask (``{id}.jpg`` with ``{id}_label.png``), and how the masks
store classes (class ids, 0/255, palette indices, RGB colours), from a sample of the masks; or a classification
layout (``<split>/<class>/<image>`` folders, or a CSV of paths and labels). It returns the ``data:`` section of
params (as plain values the typed models accept, so the folder source reads exactly what was found), what it
found with counts, and what it could not decide (class names above all: masks hold numbers or colours).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from visionflow.data.masks import open_decoded
from visionflow.data.sources import IMAGE_SUFFIXES

__all__ = ["Survey", "survey"]

SPLIT_WORDS = {"train": ("train", "training", "trn"), "val": ("val", "valid", "validation", "dev"),
               "test": ("test", "testing", "tst")}  # fmt: skip
MASK_WORDS = ("mask", "label", "annot", "groundtruth", "ground_truth", "manual", "segmentation", "gt", "seg", "ann")
REGION_WORDS = ("roi", "region", "fov")
SAMPLED_MASKS = 24  # masks opened to learn how classes are stored
MAX_COLOURS = 64  # more distinct colours than this: not a colour table (JPEG-compressed masks, or photos)
DEPTH = 4  # folders below the root that are looked at


@dataclass
class Survey:
    """What ``visionflow init`` found: the params to write, what it saw and what it could not decide."""

    root: Path
    task: str = "segmentation"
    data: dict[str, Any] = field(default_factory=dict)
    found: list[str] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)

    def report(self) -> str:
        lines = [f"init: {self.root} ({self.task})", *(f"  found: {line}" for line in self.found)]
        lines += [f"  not decided: {line}" for line in self.undecided] or ["  nothing left undecided"]
        return "\n".join(lines)


def survey(root: Path) -> Survey:
    """Look at ``root`` and say how to read it (see the module's docstring)."""
    if not root.is_dir():
        from visionflow.errors import InputError

        raise InputError(f"{root}: not a folder")
    result = Survey(root)
    folders = _image_folders(root)
    tables = sorted(p for p in root.glob("*.csv"))
    roles = {folder: _role(folder.relative_to(root)) for folder in folders}
    if any(kind in ("masks", "regions") for _, kind in roles.values()):
        _segmentation(result, roles)
    elif tables and (csv := _csv_layout(root, tables[0])):
        result.task, result.data = "classification", csv
        result.found.append(f"a table of images and labels, {tables[0].name}: columns {csv['csv']}")
    elif class_folders := _class_folders(root, folders):
        _classification(result, class_folders)
    else:
        counts = ", ".join(f"{f.relative_to(root)} ({_count(f)})" for f in folders) or "none"
        result.undecided.append(f"no mask folder (names with {', '.join(MASK_WORDS[:5])}, ...) and no class "
                                f"folders under split folders; image folders: {counts}")  # fmt: skip
    return result


# ---------------------------------------------------------------------------------------------------------------
# folders


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_SUFFIXES)  # fmt: skip


def _count(folder: Path) -> int:
    return len(_images(folder))


def _image_folders(root: Path) -> list[Path]:
    """Every folder (the root included, down to :data:`DEPTH`) that directly holds image files."""
    found = []
    for folder in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        parts = folder.relative_to(root).parts
        if len(parts) <= DEPTH and not any(part.startswith(".") for part in parts) and _images(folder):
            found.append(folder)
    return found


def _words(part: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", part.lower()) if w]


def _role(relative: Path) -> tuple[str | None, str]:
    """(split or None, images | masks | regions) from a folder's path: ``train/images``, ``trainannot``,
    ``annotations/validation``, ``1st_manual``."""
    split, kind = None, "images"
    for part in relative.parts:
        low = part.lower()
        for name, words in SPLIT_WORDS.items():
            if split is None and any(w == low or (low.startswith(w) and len(w) > 2) or w in _words(part)
                                     for w in words):  # fmt: skip
                split = name
        if any(w in _words(part) or (len(w) > 3 and w in low) for w in REGION_WORDS):
            kind = "regions"
        elif kind == "images" and any(w in _words(part) or (len(w) > 3 and w in low) for w in MASK_WORDS):
            kind = "masks"
    return split, kind


# ---------------------------------------------------------------------------------------------------------------
# segmentation


def _segmentation(result: Survey, roles: dict[Path, tuple[str | None, str]]) -> None:
    root = result.root
    by_split: dict[str, dict[str, Path]] = {}
    for folder, (split, kind) in roles.items():
        split = split or "train"
        if kind in by_split.setdefault(split, {}):
            result.undecided.append(f"split {split}: two {kind} folders, {by_split[split][kind].relative_to(root)} "
                                    f"and {folder.relative_to(root)}; the first is used")  # fmt: skip
            continue
        by_split[split][kind] = folder
    splits: dict[str, dict[str, str]] = {}
    names: dict[str, dict[str, str]] = {}
    for split in sorted(by_split, key=lambda s: list(SPLIT_WORDS).index(s)):
        folders = by_split[split]
        if "images" not in folders or "masks" not in folders:
            missing = "images" if "images" not in folders else "masks"
            have = ", ".join(f"{k} {v.relative_to(root)}" for k, v in folders.items())
            result.undecided.append(f"split {split}: no {missing} folder beside {have}; left out")
            continue
        entry = {kind: folders[kind].relative_to(root).as_posix() for kind in ("images", "masks", "regions")
                 if kind in folders}  # fmt: skip
        splits[split] = entry
        names[split], line = _pairing(root, folders)
        result.found.append(f"split {split}: " + line)
    if not splits:
        return
    data: dict[str, Any] = {"source": "folder", "root": root.as_posix(), "splits": splits}
    templates = list(names.values())
    if any(t != {"image": "{id}", "mask": "{id}", "region": "{id}"} for t in templates):
        data["names"] = templates[0] if all(t == templates[0] for t in templates) else names
    if "val" not in splits:
        data["val_split"] = {"share": 0.2, "by": "image", "seed": 0}
        result.undecided.append("no val split: val is carved out of train (data.val_split, 20% of the images); "
                                "where images belong together (a video, a patient): data.groups, by group")  # fmt: skip
    masks = [m for s in splits for m in _images(root / splits[s]["masks"])]
    data |= _mask_storage(result, masks)
    result.data = data


def _stems(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def _shared_start(texts: list[str]) -> str:
    """The longest start all ``texts`` share (the smallest and the largest differ first where any two do)."""
    first, last = min(texts), max(texts)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def _affixes(stems: list[str]) -> tuple[str, str]:
    """The prefix and suffix every stem shares, cut at a separator (``img_``, ``_label``), so no part of an id is
    taken: ``21_training`` and ``22_training`` share ``_training``, not the ``2``."""
    if len(stems) < 2:
        return "", ""
    prefix = _shared_start(stems)
    prefix = prefix[: max((prefix.rfind(c) for c in "_-. "), default=-1) + 1]
    suffix = _shared_start([s[::-1] for s in stems])[::-1]
    cut = [suffix.find(c) for c in "_-. " if c in suffix]
    suffix = suffix[min(cut) :] if cut else ""
    return prefix, suffix


def _ids(stems: list[str], prefix: str, suffix: str) -> set[str]:
    return {s[len(prefix) : len(s) - len(suffix)] for s in stems if s.startswith(prefix) and s.endswith(suffix)}


def _pairing(root: Path, folders: dict[str, Path]) -> tuple[dict[str, str], str]:
    """The name templates that pair the split's images with its masks (and regions), and a line saying so."""
    images, masks = _images(folders["images"]), _images(folders["masks"])
    plain = set(_stems(images)) & set(_stems(masks))
    templates = {"image": "{id}", "mask": "{id}", "region": "{id}"}
    paired = len(plain)
    if paired < 0.9 * min(len(images), len(masks)):
        image_affix, mask_affix = _affixes(_stems(images)), _affixes(_stems(masks))
        ids = _ids(_stems(images), *image_affix) & _ids(_stems(masks), *mask_affix)
        if len(ids) > paired:
            templates["image"] = f"{image_affix[0]}{{id}}{image_affix[1]}"
            templates["mask"] = f"{mask_affix[0]}{{id}}{mask_affix[1]}"
            paired = len(ids)
    if "regions" in folders:
        regions = _stems(_images(folders["regions"]))
        affix = _affixes(regions)
        if len(_ids(regions, *affix)) and not set(regions) & set(_stems(images)):
            templates["region"] = f"{affix[0]}{{id}}{affix[1]}"
    shown = ", ".join(f"{k} {v.relative_to(root).as_posix()}/" for k, v in folders.items())
    named = "" if templates == {"image": "{id}", "mask": "{id}", "region": "{id}"} else (
        " by the names " + ", ".join(f"{k} {v}" for k, v in templates.items() if v != "{id}"))  # fmt: skip
    return templates, (f"{shown}: {len(images)} images, {len(masks)} masks, {paired} paired{named}"
                       + (f" ({min(len(images), len(masks)) - paired} unpaired: validate will name them)"
                          if paired < min(len(images), len(masks)) else ""))  # fmt: skip


def _mask_storage(result: Survey, masks: list[Path]) -> dict[str, Any]:
    """classes, ignore_index and masks (values or colours) from a sample of the masks."""
    step = max(1, len(masks) // SAMPLED_MASKS)
    sample = masks[::step][:SAMPLED_MASKS]
    values: Counter[int] = Counter()
    colours: Counter[tuple[int, int, int]] = Counter()
    modes: Counter[str] = Counter()
    for path in sample:
        try:
            stored = open_decoded(path)
        except OSError as exc:
            result.undecided.append(f"{path}: does not decode ({exc}); validate will set it aside")
            continue
        modes[stored.mode] += 1
        pixels = np.asarray(stored)
        if pixels.ndim == 3:
            rgb = pixels[..., :3].reshape(-1, 3)
            if (rgb[:, 0] == rgb[:, 1]).all() and (rgb[:, 1] == rgb[:, 2]).all():
                values.update(dict(zip(*np.unique(rgb[:, 0], return_counts=True), strict=True)))
            else:
                found, counts = np.unique(rgb, axis=0, return_counts=True)
                colours.update({tuple(int(c) for c in f): int(n) for f, n in zip(found, counts, strict=True)})
        else:
            values.update({int(v): int(n) for v, n in zip(*np.unique(pixels, return_counts=True), strict=True)})
    kinds = ", ".join(f"{n} {mode}" for mode, n in modes.items())
    where = f"{len(sample)} of {len(masks)} masks opened ({kinds})"
    if colours:
        return _colour_table(result, colours, where)
    return _value_table(result, values, where, palette="P" in modes)


def _colour_table(result: Survey, colours: Counter[tuple[int, int, int]], where: str) -> dict[str, Any]:
    if len(colours) > MAX_COLOURS:
        result.undecided.append(f"{where}: {len(colours)} colours, too many for a colour table (JPEG-compressed "
                                "masks?); store masks as PNG, one colour per class")  # fmt: skip
        return {}
    ordered = sorted(colours, key=lambda c: (c != (0, 0, 0), -colours[c]))  # black first: background
    names = ["background" if c == (0, 0, 0) else f"class_{i}" for i, c in enumerate(ordered)]
    table = {"#{:02x}{:02x}{:02x}".format(*c): name for c, name in zip(ordered, names, strict=True)}
    shown = ", ".join(f"{k} ({colours[c] / sum(colours.values()):.1%})" for k, c in zip(table, ordered, strict=True))
    result.found.append(f"{where}: RGB colour masks, {len(table)} colours: {shown}")
    result.undecided.append("class names: the colours are named class_1, class_2, ... in data.classes and "
                            "data.masks.colors; give each its name (or ignore, for pixels left out)")  # fmt: skip
    return {"classes": names, "masks": {"colors": table}}


def _value_table(result: Survey, values: Counter[int], where: str, palette: bool) -> dict[str, Any]:
    present = sorted(values)
    if not present:
        return {}
    if set(present) <= {0, 255} and 255 in present:
        result.found.append(f"{where}: 0/255 masks (0 {values[0] / sum(values.values()):.1%} of the pixels)")
        result.undecided.append("class names: 0 is named background and 255 foreground; rename them in "
                                "data.classes and data.masks.values")  # fmt: skip
        return {"classes": ["background", "foreground"], "masks": {"values": {0: "background", 255: "foreground"}},
                "ignore_index": 255}  # fmt: skip
    ignore = 255 if 255 in present else None
    ids = [v for v in present if v != ignore]
    stored = "palette indices" if palette else "grey values"
    if ids and ids[-1] < MAX_COLOURS and len(ids) >= 0.5 * (ids[-1] + 1):
        count = ids[-1] + 1
        result.found.append(f"{where}: class ids stored as {stored} 0-{ids[-1]}" +
                            (", 255 (taken as the ignore index: pixels left out)" if ignore else ""))  # fmt: skip
        result.undecided.append(f"class names: {count} classes named class_0 ... class_{count - 1} in data.classes; "
                                "give each its name (if one of them marks unlabelled pixels, set data.ignore_index "
                                "to its id)")  # fmt: skip
        return {"classes": [f"class_{i}" for i in range(count)], "ignore_index": 255}
    table = {v: f"class_{i}" for i, v in enumerate(ids)}
    result.found.append(f"{where}: {len(ids)} {stored} ({', '.join(map(str, ids))}), not consecutive ids: a table")
    result.undecided.append("class names: the values are named class_0, class_1, ... in data.classes and "
                            "data.masks.values; give each its name (or ignore)")  # fmt: skip
    masks: dict[str, Any] = {"values": table | ({ignore: "ignore"} if ignore else {})}
    return {"classes": list(table.values()), "masks": masks, "ignore_index": 255}


# ---------------------------------------------------------------------------------------------------------------
# classification


def _class_folders(root: Path, folders: list[Path]) -> dict[str, dict[str, int]]:
    """split -> class -> images, where every image folder is ``<root>/<split>/<class>``."""
    layout: dict[str, dict[str, int]] = {}
    for folder in folders:
        parts = folder.relative_to(root).parts
        if len(parts) != 2:
            return {}
        layout.setdefault(parts[0], {})[parts[1]] = _count(folder)
    return layout


def _classification(result: Survey, layout: dict[str, dict[str, int]]) -> None:
    classes = sorted({c for split in layout.values() for c in split})
    for split, counts in layout.items():
        shown = ", ".join(f"{c} {n}" for c, n in sorted(counts.items()))
        result.found.append(f"split {split}: {sum(counts.values())} images in {len(counts)} class folders ({shown})")
    result.task = "classification"
    result.data = {"source": "imagefolder", "root": result.root.as_posix(), "classes": classes}
    if "val" not in layout:
        result.undecided.append(f"no val folder (the splits are {', '.join(layout)}); the imagefolder source takes "
                                "every subfolder as a split: move a share of train into val/")  # fmt: skip
    unknown = [s for s in layout if s not in SPLIT_WORDS]
    if unknown:
        result.undecided.append(f"folders {', '.join(unknown)} are read as splits of those names")


def _csv_layout(root: Path, table: Path) -> dict[str, Any] | None:
    """The csv source's columns, where ``table`` has a column of image paths, one of labels and one of splits."""
    try:
        rows = pd.read_csv(table, dtype=str).dropna(how="all")
    except (pd.errors.ParserError, UnicodeDecodeError, OSError):
        return None
    images = [c for c in rows if rows[c].dropna().str.lower().str.endswith(tuple(IMAGE_SUFFIXES)).all()]
    splits = [c for c in rows if c not in images and rows[c].dropna().str.lower().isin(
        [w for words in SPLIT_WORDS.values() for w in words]).all()]  # fmt: skip
    labels = [c for c in rows if c not in images + splits and 1 < rows[c].nunique() <= max(2, len(rows) // 2)]
    if not (images and splits and labels):
        return None
    columns = {"file": table.name, "image": images[0], "label": labels[0], "split": splits[0]}
    return {"source": "csv", "root": root.as_posix(), "csv": columns,
            "classes": sorted(rows[labels[0]].dropna().unique().tolist())}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# params


CLASSIFIER_KEYS = {  # what a classifier must pin (the planner plans a segmenter's batch, lr and epochs only)
    ("model", "arch"): "resnet18",
    ("train", "loss"): {"ce": 1.0, "dice": 0.0},
    ("train", "epochs"): 20,
    ("train", "batch_size"): 32,
}


def _flow(value: Any) -> str:
    import yaml

    return (
        yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False)
        .strip()
        .removesuffix("...")
        .strip()
    )


def _section(lines: list[str], name: str) -> tuple[int, int]:
    """The lines of a top-level section: from ``name:`` to before the next section (its leading blank and
    comment lines belong to the next one)."""
    start = next((i for i, line in enumerate(lines) if line.split("#")[0].rstrip() == f"{name}:"), None)
    if start is None:
        lines += ["", f"{name}:"]
        return len(lines) - 1, len(lines)
    end = next((i for i in range(start + 1, len(lines)) if lines[i][:1] not in ("", " ", "#")), len(lines))
    while end - 1 > start and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
        end -= 1
    return start, end


def _set(lines: list[str], section: str, key: str, value: Any, why: str) -> None:
    """Set one key of a section, in place of its line (comment and all), or after the section's first line."""
    start, end = _section(lines, section)
    line = f"  {key}: {_flow(value)}  # {why}"
    for i in range(start + 1, end):
        if re.match(rf"  {re.escape(key)}:", lines[i]):
            lines[i] = line
            while i + 1 < end and re.match(r"  \s+#", lines[i + 1]):  # its continued comment: no longer true
                del lines[i + 1]
                end -= 1
            return
    lines.insert(start + 1, line)


def params_text(current: str, found: Survey, model_name: str) -> str:
    """params.yaml's text with its ``data:`` section replaced by the survey's (every key, as the typed model
    fills it, so that dvc.yaml's ``${data.*}`` resolve), ``register.model_name`` set; for a classifier also
    ``project.task`` and the keys a classifier must pin. Every other line stays as it was."""
    import yaml

    from visionflow.config import DataConfig

    lines = current.splitlines()
    data = DataConfig.model_validate(found.data).model_dump(mode="json")
    if data["masks"]["values"]:  # grey values are numbers (JSON made them text)
        data["masks"]["values"] = {int(k): v for k, v in data["masks"]["values"].items()}
    block = yaml.safe_dump({"data": data}, default_flow_style=None, width=118, sort_keys=False).splitlines()
    start, end = _section(lines, "data")
    lines[start:end] = [f"# data: written by `visionflow init {found.root}`; each key: docs/configuration.md", *block]
    why = "written by visionflow init (the data's name)"
    _set(lines, "register", "model_name", model_name, why)
    if found.task == "classification":
        _set(lines, "project", "task", "classification", "written by visionflow init (the layout)")
        for (section, key), value in CLASSIFIER_KEYS.items():
            _set(lines, section, key, value, "written by visionflow init: a classifier's, to tune")
    return "\n".join(lines) + "\n"
