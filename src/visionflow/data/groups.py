"""Groups of images that belong together, and a val split carved out of train whole groups at a time.

Real datasets are full of groups: the frames of one video, the images of one patient, site, camera or day. A val
split that shares a group with train rewards memorising the group, so the best epoch and every val figure flatter
the model. prepare records each image's group in the manifest (validate names the groups val or test share with
train), and where the data ships without val, :func:`carve_val` makes one that shares none.

Pure functions over :class:`~visionflow.data.sources.SampleRef` lists: no file is read here.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import replace

from visionflow.config import GroupsConfig, ValSplitConfig
from visionflow.data.sources import SampleRef
from visionflow.errors import SourceError

__all__ = ["assign_groups", "carve_val", "group_in", "unit_hash"]


def group_in(file_name: str, pattern: re.Pattern[str]) -> str | None:
    """The group a file name holds: what ``(?P<group>...)`` matched, or the whole match of a pattern without
    named groups; None where the pattern is not found (or the group matched nothing)."""
    found = pattern.search(file_name)
    if found is None:
        return None
    group = found["group"] if "group" in pattern.groupindex else found[0]
    return group or None


def assign_groups(samples: list[SampleRef], groups: GroupsConfig) -> list[SampleRef]:
    """Every sample with its group and where it came from (``group_from``): the pattern searched in the image's
    file name (:class:`~visionflow.config.GroupsConfig`), or the csv column the source read. A sample neither
    gives a group to is its own group (its id, ``group_from`` id): kept, and named by validate's
    ``group_unmatched``. No groups configured: the samples as they are (no group)."""
    if groups.pattern is not None:
        pattern = re.compile(groups.pattern)
        named = [(ref, group_in((ref.image or ref.mask).name, pattern)) for ref in samples]  # type: ignore[union-attr]
        source = "pattern"
    elif groups.column is not None:
        named = [(ref, ref.group) for ref in samples]
        source = "column"
    else:
        return samples
    return [replace(ref, group=group or ref.id, group_from=source if group else "id") for ref, group in named]


def unit_hash(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by (seed, key) alone: the same on every machine and run, whatever else the data
    holds (so a decision made with it never moves when images are added)."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def carve_val(samples: list[SampleRef], spec: ValSplitConfig | None) -> list[SampleRef]:
    """Move whole groups (``by: group``; a sample without a group is its own) or single images (``by: image``)
    from train to val: a group goes where ``unit_hash(seed, group or id) < share`` says, decided for each group
    alone, so adding images never moves an earlier one and no group ends in both splits.

    The trade-off, taken knowingly: a quota per stratum (say, the images holding a rare class) would make val's
    class mix exact, but whether one group goes to val would then depend on every other group, and a new delivery
    would reshuffle the split. Here val holds about ``share`` of the groups and its class mix is left to chance;
    prepare prints the images of each class in train and val, and validate's ``classes_in_val`` names a class of
    train that val lacks (another ``seed`` draws another val).

    The data must not have a val split already (a :class:`~visionflow.errors.SourceError` says what to change).
    """
    if spec is None:
        return samples
    present = Counter(ref.split for ref in samples)
    if present["val"]:
        raise SourceError(
            f"data.val_split carves val out of train, but the data has a val split ({present['val']} images); "
            "set data.val_split: null to use that one, or (without a preset) leave val out of data.splits to carve one"
        )
    if not present["train"]:
        raise SourceError(f"data.val_split carves val out of train, but the data has no train split ({dict(present)})")
    keys = [_key(ref, spec.by) if ref.split == "train" else None for ref in samples]
    units = set(keys) - {None}
    to_val = {key for key in units if unit_hash(spec.seed, key) < spec.share}  # type: ignore[arg-type]
    if not to_val or to_val == units:
        what = "groups" if spec.by == "group" else "images"
        raise SourceError(
            f"data.val_split (share {spec.share}, by {spec.by}, seed {spec.seed}) sends {len(to_val)} of the "
            f"{len(units)} train {what} to val, leaving {'val' if not to_val else 'train'} empty: each is decided "
            "alone, so few of them can all fall one way; try another data.val_split.seed or share"
            + (", or by: image" if spec.by == "group" else "")
        )
    return [replace(ref, split="val") if key in to_val else ref for ref, key in zip(samples, keys, strict=True)]


def _key(ref: SampleRef, by: str) -> str:
    """What one carving decision is made for: the sample's group (``by: group``, where it has one), else its id."""
    return ref.group if by == "group" and ref.group is not None else ref.id
