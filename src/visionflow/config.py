"""Typed view of params.yaml: read once, validated once, passed to every stage.

Every section forbids unknown keys, so a typo such as ``train.epoch`` fails at start-up with the key and the
keys that are allowed there, instead of being silently ignored.
"""

from __future__ import annotations

import copy
import json
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from visionflow.errors import ConfigError

__all__ = [
    "EVAL_SPLITS",
    "AugmentConfig",
    "BalanceConfig",
    "BuiltinConfig",
    "ClassShareConfig",
    "Config",
    "ConfigError",
    "CsvConfig",
    "DataConfig",
    "DigitsConfig",
    "DriftConfig",
    "EvaluateConfig",
    "EvaluatedSplit",
    "GroupsConfig",
    "InputConfig",
    "MasksConfig",
    "ModelConfig",
    "NamesConfig",
    "PathsConfig",
    "PlanConfig",
    "ProjectConfig",
    "RegisterConfig",
    "SplitDirs",
    "TrackingConfig",
    "TrainConfig",
    "ValSplitConfig",
    "ValidateConfig",
    "load_config",
    "parse_colour",
]

DEFAULT_PARAMS = Path("params.yaml")
PLANNED = ("input", "batch_size", "lr", "epochs", "rare_crops", "augment")  # the train keys that may be ``auto``


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectConfig(_Section):
    task: Literal["segmentation", "classification"] = "segmentation"  # what the pipeline trains
    seed: int = 42  # seeds python, numpy and torch in every stage


EVAL_SPLITS = ("val", "test")  # the splits evaluate scores, where the data has them (val always)


@dataclass(frozen=True)
class EvaluatedSplit:
    """The files evaluate writes for one split, under ``paths.evaluation/<split>/``."""

    split: str
    root: Path

    @property
    def per_class(self) -> Path:
        return self.root / "per_class.csv"

    @property
    def per_image(self) -> Path:
        """One row per image (its scores; classification: actual and predicted class): for comparing models
        image by image."""
        return self.root / "per_image.csv"

    @property
    def per_group(self) -> Path:
        """One row per group of images (data.groups: a sequence, site, camera; one row ``all`` without groups):
        the split's metrics over that group's images, so a team sees which group fails."""
        return self.root / "per_group.csv"

    @property
    def per_group_plot(self) -> Path:
        return self.root / "per_group.png"

    @property
    def confusion_matrix(self) -> Path:
        return self.root / "confusion_matrix.png"

    @property
    def overlays_best(self) -> Path:
        return self.root / "overlays_best.png"

    @property
    def overlays_worst(self) -> Path:
        return self.root / "overlays_worst.png"

    @property
    def corruptions(self) -> Path:
        """The score under each corruption (a column each) per severity (a row each; severity 0: clean)."""
        return self.root / "corruptions.csv"

    @property
    def corruptions_plot(self) -> Path:
        return self.root / "corruptions.png"

    @property
    def files(self) -> tuple[Path, ...]:
        """What evaluate writes for the split (the corruption table and plot where ``evaluate.corruptions``)."""
        return tuple(p for p in (self.per_class, self.per_image, self.per_group, self.per_group_plot,
                                 self.confusion_matrix, self.overlays_best, self.overlays_worst, self.corruptions,
                                 self.corruptions_plot) if p.exists())  # fmt: skip


class PathsConfig(_Section):
    """Every file the stages exchange; dvc.yaml reads the same values through ``${paths.*}``."""

    prepared: Path = Path("data/prepared")  # prepare's output folder (manifest, materialised images)
    validation: Path = Path("data/validation")  # validate's summary and Data Docs
    balance: Path = Path("data/balance")  # class frequencies and weights
    model: Path = Path("data/model")  # trained weights, checkpoint, training history
    evaluation: Path = Path("data/evaluation")  # metrics.json, and a folder of tables and plots per eval split
    registry: Path = Path("data/registry")  # what register did (name, version, alias)
    plan: Path = Path("data/plan")  # the plan: planned train settings with their reasons, the machine profile
    cache: Path = Path("data/cache")  # decoded images as memory-mapped uint8 arrays (not a DVC output)

    @property
    def manifest(self) -> Path:
        return self.prepared / "manifest.csv"

    @property
    def dataset_info(self) -> Path:
        return self.prepared / "dataset.json"

    @property
    def validation_summary(self) -> Path:
        return self.validation / "summary.json"

    @property
    def data_docs(self) -> Path:
        return self.validation / "docs"

    @property
    def accepted(self) -> Path:
        """The validated manifest: the rows later stages use."""
        return self.validation / "accepted.csv"

    @property
    def quarantine(self) -> Path:
        return self.validation / "quarantine.csv"

    @property
    def validation_report(self) -> Path:
        return self.validation / "report.md"

    @property
    def validation_page(self) -> Path:
        """report.md as one self-contained HTML page: readable offline, unlike the Data Docs' CDN scripts."""
        return self.validation / "report.html"

    @property
    def validation_reference(self) -> Path:
        """Statistics of the last accepted dataset, kept across runs (a persistent DVC output) for drift."""
        return self.validation / "reference.json"

    @property
    def class_weights(self) -> Path:
        return self.balance / "class_weights.json"

    @property
    def class_distribution(self) -> Path:
        return self.balance / "class_distribution.csv"

    @property
    def class_distribution_plot(self) -> Path:
        return self.balance / "class_distribution.png"

    @property
    def sample_weights(self) -> Path:
        return self.balance / "sample_weights.csv"

    @property
    def weights(self) -> Path:
        return self.model / "model.pt"

    @property
    def checkpoint(self) -> Path:
        return self.model / "checkpoint.pt"

    @property
    def history(self) -> Path:
        return self.model / "history.csv"

    @property
    def run_info(self) -> Path:
        return self.model / "mlflow_run.json"

    @property
    def metrics(self) -> Path:
        return self.evaluation / "metrics.json"

    @property
    def headline(self) -> Path:
        """The headline figures of each eval split (``dvc metrics show``); metrics.json holds every figure."""
        return self.evaluation / "headline.json"

    def evaluated(self, split: str) -> EvaluatedSplit:
        """evaluate's tables and plots of one split (``val``, ``test``), in a folder of their own."""
        return EvaluatedSplit(split, self.evaluation / split)

    @property
    def registration(self) -> Path:
        return self.registry / "registration.json"

    @property
    def plan_file(self) -> Path:
        """The planned train settings (``auto`` keys) with their reasons: what train runs with."""
        return self.plan / "plan.json"

    @property
    def plan_report(self) -> Path:
        return self.plan / "plan.md"

    @property
    def machine_profile(self) -> Path:
        """The measured speed per machine kind and model, kept with the decode cache (not a DVC output: deleting
        it means measuring again)."""
        return self.cache / "machine.json"

    @property
    def decision(self) -> Path:
        """The last promotion decision (register stage, `visionflow promote`): aliases, reasons, the gate's numbers."""
        return self.registry / "decision.json"


class SplitDirs(_Section):
    images: str  # folder of images, relative to data.root
    masks: str  # folder of masks, matched to the images by data.names
    regions: str | None = None  # folder of region masks (zero: not scored, not trained on); null: none


def _template(value: str) -> str:
    if value.count("{id}") != 1 or "/" in value:
        raise ValueError(f"name template '{value}': expected one '{{id}}' in a file name, e.g. '{{id}}_label.png'")
    return value


class NamesConfig(_Section):
    """How image, mask and region files of one sample are named: ``{id}`` is the shared part. A template with a
    suffix (``{id}_label.png``) matches whole file names; one without (``{id}``, ``{id}_label``) matches the name
    before any image suffix (.png, .jpg, .tif, .gif, ...)."""

    image: str = "{id}"  # an image's file name, e.g. "{id}.jpg"
    mask: str = "{id}"  # its mask's, e.g. "{id}_label.png"
    region: str = "{id}"  # its region mask's (splits with a regions folder)

    @model_validator(mode="after")
    def _one_id_each(self) -> NamesConfig:
        for value in (self.image, self.mask, self.region):
            _template(value)
        return self


class GroupsConfig(_Section):
    """Which images belong together (frames of one video; images of one patient, site, camera or day). validate
    names the groups val or test share with train (``group_leak``), and ``data.val_split`` carves whole groups.
    Both null: no groups (every image stands alone).

    ``pattern`` is searched (``re.search``) in each sample's image file name: the name with its suffix and without
    its folders (``0016E5_06390.png``; a mask without its image: the mask's name). What the named group ``group``
    matches is the group (``^(?P<group>[^_]+)_`` takes the part before the first ``_``); a pattern without named
    groups takes its whole match. A file the pattern does not match is a group of its own (its id): it is kept,
    and validate's ``group_unmatched`` counts and names such files."""

    pattern: str | None = None  # regex over the image file name; (?P<group>...) or else the whole match
    column: str | None = None  # csv source: the column of data.csv.file holding each image's group

    @model_validator(mode="after")
    def _one_valid_rule(self) -> GroupsConfig:
        if self.pattern is not None and self.column is not None:
            raise ValueError("data.groups: give pattern (file names) or column (csv source), not both")
        if self.pattern is not None:
            try:
                compiled = re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"data.groups.pattern {self.pattern!r} is not a valid regex: {exc}") from None
            if compiled.groupindex and "group" not in compiled.groupindex:
                named = ", ".join(compiled.groupindex)
                raise ValueError(
                    f"data.groups.pattern {self.pattern!r} names the group(s) {named} but not 'group'; "
                    "name the part that is the group (?P<group>...)"
                )
        return self

    @property
    def configured(self) -> bool:
        return self.pattern is not None or self.column is not None


class ValSplitConfig(_Section):
    """A val split carved out of train by prepare, for data that ships without one. Each group (``by: group``;
    an image without a group is its own) or each image (``by: image``) goes to val when a hash of (seed, group
    or image id) falls below ``share``: the decision is per group, so adding images never moves earlier ones
    and no group is in both splits. The price of that stability: val holds about ``share`` of the groups, not
    exactly, and it is not stratified by class; prepare prints, per class, the train and val images that hold it,
    and validate's ``classes_in_val`` names a class of train that val lacks (another seed draws another val)."""

    share: float = Field(0.2, gt=0, lt=1)  # expected share of the train groups (by: image: images) moved to val
    by: Literal["group", "image"] = "group"  # group: whole groups of data.groups | image: each image alone
    seed: int = 0  # another seed, another val; the same seed keeps every image where it was


def _names(value: Any, where: str) -> NamesConfig:
    """One set of file names, its problems as one message naming each key (``data.names.train.image``)."""
    try:
        return NamesConfig.model_validate(value)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(map(str, (where, *error["loc"])))
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown key '{key}'; allowed keys here: image, mask, region")
            else:
                at = f"'{key}': " if key != "data.names" else ""  # the message already says where
                problems.append(at + error["msg"].removeprefix("Value error, "))
        raise ValueError("; ".join(problems)) from None


def _names_form(value: Any) -> Any:
    """``data.names`` in either form: one ``{image, mask, region}`` for every split, or a mapping split -> those
    (where the file names carry the split: ``{train: {image: "{id}_training.tif"}, test: {...}}``)."""
    if isinstance(value, NamesConfig):
        return value
    if value == {}:
        return NamesConfig()  # every default, as before the per-split form
    if not isinstance(value, dict):
        raise ValueError("expected {image, mask, region} (file name templates), or split -> {image, mask, region}")
    nested = [isinstance(v, dict | NamesConfig) for v in value.values()]
    if all(nested):
        return {str(split): _names(names, f"data.names.{split}") for split, names in value.items()}
    if any(nested):
        raise ValueError("give {image, mask, region} for every split, or split -> {image, mask, region}; not both")
    return _names(value, "data.names")


class MasksConfig(_Section):
    """How stored mask pixels become class ids. Neither table: the stored values are the ids (palette indices for
    palette PNGs). ``values``: a grey (or palette-index) value -> class table, e.g. ``{0: background, 255: road}``
    for 0/255 masks. ``colors``: an RGB colour -> class table for colour-coded masks, colours as ``"#rrggbb"`` or
    ``"r,g,b"``. A class is named or given by id; ``ignore`` (or the ignore index) marks pixels left out. A stored
    value or colour missing from the table is named by validate, with the file."""

    values: dict[int, str | int] | None = None  # grey or palette-index value -> class (name, id or ignore)
    colors: dict[str, str | int] | None = None  # "#rrggbb" or "r,g,b" -> class (name, id or ignore)

    @model_validator(mode="after")
    def _one_table(self) -> MasksConfig:
        if self.values is not None and self.colors is not None:
            raise ValueError("data.masks: give values (grey masks) or colors (RGB masks), not both")
        for colour in self.colors or {}:
            parse_colour(colour)
        return self


def parse_colour(text: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` or ``"r,g,b"`` -> (r, g, b)."""
    value = text.strip()
    try:
        if value.startswith("#") and len(value) == 7:
            rgb = tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))
        else:
            rgb = tuple(int(part) for part in value.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise ValueError(f"colour '{text}': expected '#rrggbb' or 'r,g,b' with values 0-255")
    return rgb  # type: ignore[return-value]


class BuiltinConfig(_Section):
    # shapes: six classes of shapes scaled with the image | wires: large images with wires and rivets whose
    # widths are fixed in pixels, so that shrinking the image loses them (see visionflow.data.builtin)
    kind: Literal["shapes", "wires"] = "shapes"
    num_images: int = Field(240, ge=10)  # images generated in total
    image_size: int = Field(64, ge=32)  # side of the square images, in pixels
    val_fraction: float = Field(0.2, gt=0, lt=1)  # share of images in the val split
    test_fraction: float = Field(0.0, ge=0, lt=1)  # share in a test split (0: none)
    seed: int = 0  # the generator's own seed: same seed, same bytes

    @model_validator(mode="after")
    def _some_train(self) -> BuiltinConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% of the images for train")
        return self


class DigitsConfig(_Section):
    image_size: int = Field(32, ge=16)  # scikit-learn's 8x8 digits are upscaled to this side
    val_fraction: float = Field(0.2, gt=0, lt=1)  # share of each digit in the val split
    seed: int = 0  # which images go to val


class CsvConfig(_Section):
    """A table of images and labels: one row per image, paths relative to data.root."""

    file: str = "labels.csv"  # relative to data.root
    image: str = "image"  # column of image paths
    label: str = "label"  # column of class names
    split: str = "split"  # column of split names (train, val, ...)


class DataConfig(_Section):
    # segmentation: builtin | folder; classification: digits | imagefolder | csv
    source: Literal["builtin", "folder", "digits", "imagefolder", "csv"] = "builtin"
    # What prepare reads and DVC hashes: the dataset folder for `folder`, the generator module for `builtin`.
    root: Path = Path("src/visionflow/data/builtin.py")
    preset: Literal["camvid"] | None = None  # folder layout and classes of a known dataset
    splits: dict[str, SplitDirs] | None = None  # folder source: split name -> image and mask folders
    classes: list[str] | None = None  # class names by id; null takes the source's or preset's
    ignore_index: int | None = None  # mask value left out of loss and metrics; null takes the default
    # folder source: image, mask and region file names; or a mapping split -> names, where the names carry the split
    names: NamesConfig | dict[str, NamesConfig] = NamesConfig()
    groups: GroupsConfig = GroupsConfig()  # which images belong together (a video, a patient, a site)
    val_split: ValSplitConfig | None = None  # carve val out of train (data without a val split); null: off
    masks: MasksConfig = MasksConfig()  # folder source: stored mask values or colours -> classes
    builtin: BuiltinConfig = BuiltinConfig()  # builtin source: the generated segmentation set
    digits: DigitsConfig = DigitsConfig()  # digits source: scikit-learn's handwritten digits
    csv: CsvConfig = CsvConfig()  # csv source: the table of images and labels

    _names_form = field_validator("names", mode="before")(_names_form)

    @model_validator(mode="after")
    def _folder_needs_layout(self) -> DataConfig:
        if self.source == "folder" and self.preset is None and self.splits is None:
            raise ValueError("data.source 'folder' needs data.preset (camvid) or data.splits")
        if self.groups.column is not None and self.source != "csv":
            raise ValueError(
                f"data.groups.column is for data.source csv (a column of data.csv.file), not '{self.source}'; "
                "group files by their names with data.groups.pattern"
            )
        if isinstance(self.names, dict) and self.splits is not None:
            unknown = sorted(set(self.names) - set(self.splits))
            if unknown:
                raise ValueError(
                    f"data.names names split(s) {', '.join(unknown)} that data.splits lacks ({', '.join(self.splits)})"
                )
        return self

    def names_of(self, split: str) -> NamesConfig | None:
        """The file names of one split: ``data.names``, or its entry for the split (None where it has none)."""
        return self.names.get(split) if isinstance(self.names, dict) else self.names


Severity = Literal["error", "warning"]


class DriftConfig(_Section):
    """Thresholds beyond which a change against the last accepted dataset is reported (as a warning)."""

    class_share: float = Field(0.05, ge=0)  # absolute change of a class's train pixel share (0.05 = 5 points)
    brightness: float = Field(20.0, ge=0)  # change of mean grey level (0-255)
    size: float = Field(0.10, ge=0)  # relative change of mean width or height


class ClassShareConfig(_Section):
    min: float = Field(0.0, ge=0, le=1)  # smallest train pixel share a class may have (warning below)
    max: float = Field(1.0, ge=0, le=1)  # largest train pixel share a class may have (warning above)


class ValidateConfig(_Section):
    on_error: Literal["fail", "quarantine"] = "fail"  # stop the pipeline, or set failing files aside
    channels: Literal["convert", "reject"] = "convert"  # grayscale / RGBA images: convert to RGB (reported), or reject
    masks_16bit: Literal["convert", "reject"] = "convert"  # 16-bit masks: read as class ids (reported), or reject
    # an image whose EXIF orientation would mirror or rotate it when shown: turn it upright (reported), or reject
    exif_orientation: Literal["apply", "reject"] = "reject"
    min_image_size: int = Field(16, ge=1)  # smallest accepted width or height, in pixels
    near_duplicate_distance: int = Field(8, ge=-1)  # Hamming distance on 256-bit dHash; -1 turns it off
    required_splits: list[str] = ["train", "val"]  # splits that must keep at least one image
    class_share: ClassShareConfig = ClassShareConfig()  # bounds on each class's train pixel share (warnings)
    drift: DriftConfig = DriftConfig()  # change against the last accepted data that is reported
    severity: dict[str, Severity] = {}  # per-check override, e.g. {near_duplicate: error, classes_in_train: warning}
    max_listed: int = Field(20, ge=1)  # failing files printed per run (the JSON summary has all of them)


class BalanceConfig(_Section):
    method: Literal["none", "inverse", "inverse_sqrt", "median_frequency", "effective_number"] = (
        "median_frequency"  # class weights for the loss, from train pixel frequencies
    )
    beta: float = Field(0.9999, gt=0, lt=1)  # effective_number: (1 - beta) / (1 - beta^n)
    clip: float | None = Field(10.0, gt=0)  # largest weight after normalising to mean 1; null keeps all
    sampler: Literal["none", "repeat_factor"] = "repeat_factor"  # how training draws images
    repeat_threshold: float = Field(0.5, gt=0, le=1)  # repeat-factor t: r_c = max(1, sqrt(t / f_c))
    presence_share: float = Field(0.005, ge=0, lt=1)  # a class is in an image when it covers this share of it


class ModelConfig(_Section):
    arch: str = "Unet"  # segmentation: any smp architecture; classification: any timm model name
    encoder: str = "resnet18"  # segmentation: smp encoder name or tu-<timm model>
    encoder_weights: str | None = None  # e.g. imagenet where a model hub is reachable
    weights_path: Path | None = None  # local state dict loaded after building (no hub needed)
    weights_scope: Literal["encoder", "model"] = "encoder"  # encoder/backbone only, or the whole model


class InputConfig(_Section):
    """How images reach the model's input size."""

    size: tuple[int, int] | None = None  # (height, width), multiples of 32; null: the image's own size
    # crop: random crops in training; window (evaluation): overlapping windows of size, blended (Gaussian weights)
    policy: Literal["resize", "pad", "crop", "window"] = "resize"
    # crop: the crops drawn from each train image in one epoch (large images: an epoch's training outweighs its
    # validation pass)
    crops_per_image: int = Field(1, ge=1)
    # crop / window: each image is first shrunk by this factor (crops and windows are cut from the shrunk image;
    # scores and masks come back at its full size)
    scale: float = Field(1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _stride(self) -> InputConfig:
        if self.size is not None and any(side < 32 or side % 32 for side in self.size):
            raise ValueError(f"size {list(self.size)}: height and width must be positive multiples of 32")
        if self.policy in ("crop", "window") and self.size is None:
            raise ValueError(f"policy '{self.policy}' needs a size (the crop or window, e.g. [256, 320])")
        if self.crops_per_image > 1 and self.policy != "crop":
            raise ValueError(f"crops_per_image {self.crops_per_image} is for policy crop, not '{self.policy}'")
        if self.scale != 1 and self.policy not in ("crop", "window"):
            raise ValueError(f"scale {self.scale} is for policies crop and window, not '{self.policy}'")
        return self


class AugmentConfig(_Section):
    """A written train-time augmentation policy (visionflow.data.augment, through torchvision.transforms.v2):
    geometry moves image and mask alike (the mask by nearest neighbour, pixels from outside the image ignored),
    colour, blur and noise touch the image only. Each change applies to an image with its probability."""

    hflip: float = Field(0.5, ge=0, le=1)  # probability of a left-right flip
    vflip: float = Field(0.0, ge=0, le=1)  # probability of an up-down flip
    rotate: float = Field(0.0, ge=0, le=180)  # largest rotation in degrees, either way (nnU-Net 2D: 180)
    scale: tuple[float, float] | None = None  # zoom range [low, high] about the centre (nnU-Net: [0.7, 1.4])
    affine: float = Field(0.2, ge=0, le=1)  # probability that an image is rotated and zoomed (where either is set)
    brightness: float = Field(0.0, ge=0, lt=1)  # largest relative change: a factor in [1 - b, 1 + b] (nnU-Net: 0.25)
    contrast: float = Field(0.0, ge=0, lt=1)  # the same for contrast about the mean grey (nnU-Net: 0.25)
    saturation: float = Field(0.0, ge=0, lt=1)  # the same for saturation about each pixel's grey
    gamma: tuple[float, float] | None = None  # range of the power of intensities in [0, 1] (nnU-Net: [0.7, 1.5])
    colour: float = Field(0.15, ge=0, le=1)  # probability of each of brightness, contrast, saturation, gamma
    blur: float = Field(0.0, ge=0, le=1)  # probability of a Gaussian blur, sigma 0.5-1 px (nnU-Net: 0.2)
    noise: float = Field(0.0, ge=0, le=1)  # probability of Gaussian noise, sigma 5% of the range (nnU-Net: 0.1)

    @model_validator(mode="after")
    def _ranges(self) -> AugmentConfig:
        for name in ("scale", "gamma"):
            bounds = getattr(self, name)
            if bounds is not None and not 0 < bounds[0] <= bounds[1]:
                raise ValueError(f"{name} {list(bounds)}: expected [low, high] with 0 < low <= high")
        return self


LossTerm = Literal["ce", "dice", "focal"]


Auto = Literal["auto"]  # a key the plan stage decides (visionflow.planning.rules); any other value pins it


class TrainConfig(_Section):
    epochs: Annotated[int, Field(ge=1)] | Auto = 25  # passes over the train images; auto: as many as the budget holds
    batch_size: Annotated[int, Field(ge=1)] | Auto = 16  # the global batch (under DDP each rank takes its share)
    lr: Annotated[float, Field(gt=0)] | Auto = 3e-3  # AdamW's peak learning rate; auto: 3e-3 x sqrt(batch / 16)
    weight_decay: float = Field(1e-4, ge=0)  # AdamW's decoupled weight decay
    schedule: Literal["onecycle", "cosine"] = "onecycle"  # cosine: linear warmup, then cosine decay to 0
    warmup_epochs: float = Field(1.0, ge=0)  # cosine schedule only
    grad_clip: float | None = Field(5.0, gt=0)  # max gradient norm; null: no clipping
    # an exponential moving average of the weights (timm's ModelEmaV3), scored beside them at every val pass, the
    # better of the two kept: the decay it warms up to (1 - (1 + step) ** -0.75 until then); null: no average
    ema_decay: float | None = Field(0.999, gt=0, lt=1)
    early_stopping: int | None = Field(None, ge=1)  # stop after this many epochs without a better val mIoU
    # the checkpoint a killed run resumes from is written after the last epoch and after any epoch that ends this
    # long after the last one (0: after every epoch): a kill loses at most this much training plus one epoch, and
    # short epochs are not slowed by a save each (Unet-resnet18 with its optimiser and average: 230 MB)
    checkpoint_minutes: float = Field(5.0, ge=0)
    loss: dict[LossTerm, float] = {"ce": 1.0, "dice": 1.0}  # summed terms and their coefficients
    focal_gamma: float = Field(2.0, ge=0)  # focal term: (1 - p_t)^gamma
    input: InputConfig | Auto = InputConfig()  # size and policy for training (and for evaluation unless set there)
    # crop policy: the share of crops centred on a pixel of a rare class the image holds (rare: a train pixel
    # share below an even one, 1 / classes); the others are uniform
    rare_crops: Annotated[float, Field(ge=0, le=1)] | Auto = 1 / 3
    augment: AugmentConfig | Auto = AugmentConfig()  # auto: planned from the train masks' layout (plan.md)
    channels_last: bool = True  # NHWC memory layout: faster convolutions on this CPU
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast where the hardware has it
    num_threads: int | None = None  # torch intra-op threads; null keeps torch's choice
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA where torch finds a GPU, else the CPU

    @model_validator(mode="after")
    def _some_loss(self) -> TrainConfig:
        if not any(self.loss.values()):
            raise ValueError("train.loss needs at least one term with a non-zero coefficient (ce, dice, focal)")
        if self.input != "auto" and self.input.policy == "window":
            raise ValueError("train.input.policy 'window' is for evaluation; train on crops (policy crop)")
        return self


class EvaluateConfig(_Section):
    batch_size: int = Field(32, ge=1)  # images per forward pass when scoring
    overlays: int = Field(4, ge=0)  # images shown in each of the best and the worst overlay panels
    input: InputConfig | None = None  # null: train.input's size (policy resize; pad after pad; window after crop)
    overlap: float = Field(0.5, ge=0, lt=1)  # window policy: share of a window its neighbour covers
    flip: bool = False  # window policy: horizontal-flip test-time augmentation (twice the forward passes)
    # score val (and test) again under ImageNet-C's corruptions (noise, blur, JPEG, brightness, contrast, fog) at
    # severities 1, 3 and 5, seeded by project.seed: corruptions.csv / .png per split, the means in metrics.json
    corruptions: bool = True

    @model_validator(mode="after")
    def _no_crop(self) -> EvaluateConfig:
        if self.input is not None and self.input.policy == "crop":
            raise ValueError("evaluate.input.policy 'crop' would leave pixels unscored; use resize, pad or window")
        return self


class RegisterConfig(_Section):
    # the registered model's name; null: the dataset's name and the task (camvid-segmenter, digits-classifier)
    model_name: str | None = None
    metric: str | None = None  # headline metric in listings and tags; null: val_miou / val_accuracy
    # The promotion gate: candidate and champion scored now on one eval split, paired by image. auto: test when
    # the data has a test split (the candidate's best epoch was chosen on val), else val.
    gate_split: Literal["auto", "val", "test"] = "auto"
    min_delta: float = 0.0  # the CI's lower bound of the mean per-image gain must exceed this
    max_class_drop: float = Field(0.05, ge=0)  # largest allowed drop of any class's IoU (classification: recall)
    bootstrap_resamples: int = Field(2000, ge=100)  # resamples of the gate's paired bootstrap over images
    confidence: float = Field(0.95, gt=0.5, lt=1)  # the level of the gate's interval


class TrackingConfig(_Section):
    uri: str | None = None  # null: MLFLOW_TRACKING_URI, else a SQLite file in the working tree
    experiment: str = "visionflow"  # the MLflow experiment the runs go to
    local_db: Path = Path("mlflow.db")  # embedded default store (ignored by git)
    local_artifacts: Path = Path("mlartifacts")  # embedded default artifact root (ignored by git)


class OrchestrationConfig(_Section):
    """How the Prefect flows run the pipeline (no stage reads these, so changing them reruns nothing)."""

    retries: int = Field(2, ge=0)  # transient stage failures (tracking server away, DVC busy, killed) are retried
    retry_delay_seconds: float = Field(30.0, ge=0)  # data-validation and params errors are never retried
    overlap: Literal["wait", "skip"] = "wait"  # a run that finds the workspace busy waits for it, or skips
    lock_timeout: float = Field(3600.0, ge=0)  # seconds a waiting run waits before giving up
    commit: bool = False  # retrain: git-commit dvc.lock after a successful run
    push: bool = False  # retrain: `dvc push` the outputs to the DVC remote afterwards
    remote: str | None = None  # that remote's name; null: the default remote (`dvc remote add -d ...`)


class PlanConfig(_Section):
    """What the plan stage plans with (train keys set to ``auto`` are planned; see visionflow.planning.rules)."""

    budget_minutes: float = Field(2.0, gt=0)  # wall-clock time of training, validation passes included
    batches: list[int] = [2, 4, 8, 16, 32]  # batch sizes whose speed is measured
    steps: int = Field(2, ge=1)  # timed batches per measured size and batch (after one warm-up batch)
    crops: bool = True  # false: whole images only (resized below the scale floor where the budget needs it)


class Config(_Section):
    project: ProjectConfig = ProjectConfig()
    paths: PathsConfig = PathsConfig()
    data: DataConfig = DataConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    balance: BalanceConfig = BalanceConfig()
    model: ModelConfig = ModelConfig()
    plan: PlanConfig = PlanConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    register_: RegisterConfig = Field(RegisterConfig(), alias="register")
    tracking: TrackingConfig = TrackingConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, protected_namespaces=())

    @model_validator(mode="after")
    def _task_fits(self) -> Config:
        task, source = self.project.task, self.data.source
        if source in TASK_SOURCES[_other(task)]:
            raise ValueError(
                f"data.source '{source}' is a {_other(task)} source; {task} reads {', '.join(TASK_SOURCES[task])}"
            )
        if task == "classification" and self.train.loss.get("dice"):
            raise ValueError(
                "train.loss 'dice' is a segmentation loss; classification takes ce and focal "
                "(set train.loss.dice: 0, or train.loss: {ce: 1.0})"
            )
        return self

    @property
    def auto_keys(self) -> tuple[str, ...]:
        """The train keys left to the plan (``auto`` in params)."""
        return tuple(f"train.{k}" for k in PLANNED if getattr(self.train, k) == "auto")

    def planned(self, values: dict[str, Any]) -> Config:
        """This config with the plan's values (dotted ``train.*`` keys) in place of ``auto``."""
        update = {k.removeprefix("train."): v for k, v in values.items() if k in self.auto_keys}
        if "input" in update:
            update["input"] = InputConfig.model_validate(update["input"])
        if "augment" in update:
            update["augment"] = AugmentConfig.model_validate(update["augment"])
        return self.model_copy(update={"train": self.train.model_copy(update=update)})

    @property
    def eval_input(self) -> InputConfig:
        """evaluate.input, or train.input's size with a policy that scores every pixel."""
        if self.evaluate.input is not None:
            return self.evaluate.input
        if self.train.input == "auto":
            raise ConfigError("train.input is auto: the plan decides it (run `dvc repro plan`)")
        policy = {"resize": "resize", "pad": "pad", "crop": "window"}[self.train.input.policy]
        return InputConfig(size=self.train.input.size, policy=policy, scale=self.train.input.scale)

    @property
    def dataset_name(self) -> str:
        """The data's name (:func:`dataset_name`): the MLflow dataset and the registered model are named from it."""
        return dataset_name(self.data)

    @property
    def model_name(self) -> str:
        """The registered model name: register.model_name, or the dataset's name and the task (``camvid-segmenter``,
        ``digits-classifier``), so that another dataset (other classes) never meets this one's champion."""
        return self.register_.model_name or registered_name(self.data, self.project.task)

    @property
    def primary_metric(self) -> str:
        """The val metric that picks the best epoch and, unless register.metric says otherwise, the champion."""
        return "miou" if self.project.task == "segmentation" else "accuracy"

    def flat(self) -> dict[str, Any]:
        """Dotted keys to plain values."""
        return _flatten(self.model_dump(mode="json", by_alias=True))

    def applicable(self) -> dict[str, Any]:
        """:meth:`flat` without the keys this run does not read: the other sources' sections, the flows'
        settings (no stage reads ``orchestration``), a segmenter's keys in a classifier's run: what MLflow logs."""
        source, task = self.data.source, self.project.task
        left_out = [f"data.{s}." for s in ("builtin", "digits", "csv") if s != source] + ["orchestration."]
        if source != "folder":
            left_out += ["data.preset", "data.splits", "data.names", "data.masks"]
        if source != "csv":
            left_out.append("data.groups.column")
        if task == "classification":
            left_out += [f"train.{k}" for k in ("rare_crops", "loss.dice")] + ["evaluate.overlap", "evaluate.flip"]
        return {k: v for k, v in self.flat().items() if not k.startswith(tuple(left_out))}


def dataset_name(data: DataConfig) -> str:
    """The data's name, in lower case: the built-in generator's (``builtin-shapes``, ``builtin-wires``,
    ``digits``), else the data root's folder name (``camvid``)."""
    if data.source == "builtin":
        name = f"builtin-{data.builtin.kind}"
    elif data.source == "digits":
        name = "digits"
    else:
        name = Path(os.path.normpath(data.root.absolute())).name
    return re.sub(r"[^a-z0-9._]+", "-", name.lower()).strip("-._") or "data"


def registered_name(data: DataConfig, task: str) -> str:
    """The default registered model name: the dataset's name and the task (``camvid-segmenter``)."""
    return f"{dataset_name(data)}-{'segmenter' if task == 'segmentation' else 'classifier'}"


TASK_SOURCES = {"segmentation": ("builtin", "folder"), "classification": ("digits", "imagefolder", "csv")}


def _other(task: str) -> str:
    return "classification" if task == "segmentation" else "segmentation"


_KEY = re.compile(r"[\w\-. :/]+")  # what a tracking parameter name may hold (MLflow's rule)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys; a table keyed by values no parameter name may hold (mask colours ``#rrggbb``) stays one JSON
    value under its own key."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and all(_KEY.fullmatch(str(k)) for k in value):
            flat.update(_flatten(value, dotted + "."))
        elif isinstance(value, dict) and value:
            flat[dotted] = json.dumps(value, sort_keys=True)
        else:
            flat[dotted] = value
    return flat


def _section_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that owns the key at ``loc`` (used to list the keys allowed there)."""
    model: type[BaseModel] | None = Config
    for part in loc[:-1]:
        if model is None:
            return None
        fields = {f.alias or name: f for name, f in model.model_fields.items()}
        field = fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        options = typing.get_args(annotation) or (annotation,)  # a value-or-auto union: its model member
        model = next((a for a in options if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return model


def _describe(error: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        owner = _section_at(loc)
        allowed = sorted(f.alias or n for n, f in owner.model_fields.items()) if owner else []
        return f"unknown key '{key}'; allowed keys here: {', '.join(allowed)}"
    if not loc:  # a rule across sections: the input is the whole file, the message says what is wrong
        return error["msg"].removeprefix("Value error, ")
    return f"'{key}': {error['msg']} (got {error.get('input')!r})"


def _union_tag(part: object) -> bool:
    """pydantic's name for a member of a value-or-auto union (``constrained-int``, ``function-after[...]``)."""
    return isinstance(part, str) and (part.startswith("constrained-") or "InputConfig" in part)


def _one_per_auto_key(errors: list[Any]) -> list[dict[str, Any]]:
    """A key that takes a value or ``auto`` fails both: one message, naming the value's rule and that ``auto``
    is allowed, at the key's own location."""
    out = []
    for error in errors:
        loc = tuple(error["loc"])
        if loc and loc[-1] == "literal['auto']":
            continue
        if len(loc) > 2 and loc[0] == "train" and loc[1] in PLANNED and _union_tag(loc[2]):
            msg = error["msg"] if len(loc) > 3 else f"{error['msg']}, or 'auto' (the plan decides it)"
            error = dict(error, loc=loc[:2] + loc[3:], msg=msg)
        out.append(error)
    return out


def load_config(path: str | Path = DEFAULT_PARAMS, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate params.yaml; errors name the file, each bad key and what is allowed."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run from the project root or pass --params") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for at, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                within = ".".join(parents[: at + 1])
                raise ConfigError(f"{path}: cannot set {dotted}: {within} is {node!r} here, not a section of keys")
        node[leaf] = copy.deepcopy(value)  # the caller's dict stays as it was
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems = list(dict.fromkeys(_describe(e) for e in _one_per_auto_key(exc.errors())))
        if len(problems) == 1:  # the common case, a misspelt key: one line
            raise ConfigError(f"{path}: {problems[0]}") from None
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise ConfigError(f"{path}: {len(problems)} problems:\n{listed}") from None
