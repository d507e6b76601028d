"""What one stage hands to another: a frozen dataclass per file, with its path, ``read``, ``write`` and schema.

Stages talk to each other only through these files, which dvc.yaml declares as one stage's outs and another's
deps. A stage never parses another's file in place and never imports another stage's module: it calls
``X.read(paths)`` (``X.load(path)`` for a file somewhere else), and a file that is missing, or was written under
another schema, is a :class:`~visionflow.errors.MissingInput` that names the stage to run.

Schema versions: JSON files carry theirs as ``"schema"``; CSV files in the columns they must have (a file without
them is of another schema); ``model.pt`` in its metadata.

| file | written by | dataclass |
|---|---|---|
| prepared/dataset.json | prepare | :class:`DatasetInfo` |
| prepared/manifest.csv | prepare | :class:`Manifest` |
| validation/accepted.csv | validate | :class:`AcceptedManifest` |
| validation/summary.json | validate | :class:`ValidationSummary` |
| balance/class_weights.json | balance | :class:`ClassWeights` |
| balance/sample_weights.csv | balance | :class:`SampleWeights` |
| plan/plan.json | plan | :class:`PlanFile` |
| model/model.pt (its metadata) | train | :class:`ModelMeta` |
| model/mlflow_run.json | train | :class:`TrainingRun` |
| evaluation/metrics.json | evaluate | :class:`EvaluationMetrics` |
| registry/registration.json | register | :class:`Registration` |
| registry/decision.json | register, `visionflow promote` | :class:`GateDecision` |
"""

from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from visionflow.config import PathsConfig
from visionflow.errors import DataError, MissingInput

__all__ = [
    "ERROR_COLUMNS",
    "GROUP_COLUMNS",
    "GROUP_GIVEN",
    "AcceptedManifest",
    "CheckOutcome",
    "ClassWeights",
    "DatasetInfo",
    "Decision",
    "DriftRow",
    "EvaluationMetrics",
    "Failure",
    "GateDecision",
    "GateResult",
    "Manifest",
    "MaskCode",
    "ModelMeta",
    "PlanFile",
    "Registration",
    "SampleWeights",
    "TrainingRun",
    "ValidationSummary",
    "count_columns",
    "manifest_columns",
    "usable",
]


def _run_hint(stage: str) -> str:
    return f"run `dvc repro {stage}` (or `visionflow {stage}`)"


def _missing(path: Path, what: str, stage: str) -> MissingInput:
    return MissingInput(f"{path}: {what} not found; {_run_hint(stage)}")


def _other_schema(path: Path, what: str, found: Any, expected: int, stage: str) -> MissingInput:
    return MissingInput(
        f"{path}: {what} of schema {found}, this visionflow reads schema {expected} (written by another version); "
        f"{_run_hint(stage)}"
    )


def _coerce(hint: Any, value: Any) -> Any:
    """A JSON value back into the field's type: lists into tuples, objects into nested dataclasses."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(options[0], value) if len(options) == 1 else value
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v) for v in value)
        return tuple(_coerce(a, v) for a, v in zip(args, value, strict=True))
    if isinstance(hint, type) and is_dataclass(hint) and isinstance(value, dict):
        return _from_dict(hint, value)
    return value


def _from_dict(cls: type, raw: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _coerce(hints[f.name], raw[f.name]) for f in fields(cls) if f.name in raw})


def _plain(value: Any) -> Any:
    """JSON-ready: NaN (an undefined score) as null, numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class _HandOff:
    """A file one stage writes and others read. Subclasses name, as class arguments, its schema version, the stage
    that writes it, what it is (for error messages) and the :class:`PathsConfig` property that is its path."""

    schema: ClassVar[int]
    made_by: ClassVar[str]
    what: ClassVar[str]
    where: ClassVar[str]

    def __init_subclass__(cls, schema: int | None = None, made_by: str = "", what: str = "", where: str = "",
                          **kwargs: Any) -> None:  # fmt: skip
        super().__init_subclass__(**kwargs)
        for name, value in (("schema", schema), ("made_by", made_by), ("what", what), ("where", where)):
            if value:
                setattr(cls, name, value)

    @classmethod
    def path(cls, paths: PathsConfig) -> Path:
        return getattr(paths, cls.where)

    @classmethod
    def read(cls, paths: PathsConfig) -> Self:
        return cls.load(cls.path(paths))

    @classmethod
    def load(cls, path: Path) -> Self:
        raise NotImplementedError


class _JsonFile(_HandOff):
    """A hand-off stored as one JSON object with a ``schema`` field."""

    @classmethod
    def load(cls, path: Path) -> Self:
        if not path.is_file():
            raise _missing(path, cls.what, cls.made_by)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise MissingInput(f"{path}: {cls.what} is not valid JSON ({exc}); {_run_hint(cls.made_by)}") from None
        found = raw.get("schema") if isinstance(raw, dict) else None
        if found != cls.schema:
            raise _other_schema(path, cls.what, found, cls.schema, cls.made_by)
        try:
            return _from_dict(cls, raw)
        except (TypeError, ValueError, KeyError) as exc:
            hint = _run_hint(cls.made_by)
            raise MissingInput(f"{path}: {cls.what} does not match its schema ({exc}); {hint}") from None

    @classmethod
    def load_or_none(cls, path: Path) -> Self | None:
        """The file's contents, or None where it is absent or unreadable (summaries of a run that stopped early)."""
        try:
            return cls.load(path)
        except MissingInput:
            return None

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema} | _plain(asdict(self))  # type: ignore[call-overload]

    def write(self, paths: PathsConfig) -> Path:
        return self.save(self.path(paths))

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path


# ---------------------------------------------------------------------------------------------------------------
# prepare


@dataclass(frozen=True)
class MaskCode:
    """How stored mask pixels become class ids, resolved by prepare from ``data.masks`` (class names to ids)."""

    kind: str = "ids"  # ids: the stored values are the ids | values: a grey-value table | colors: an RGB table
    table: tuple[tuple[str, int], ...] = ()  # stored value ("255") or colour ("#ff00ff") -> class id or ignore index

    def key(self) -> str:
        """A short text that changes with the code (the decode cache keys on it)."""
        return self.kind + "".join(f"|{stored}={target}" for stored, target in self.table)


@dataclass(frozen=True)
class DatasetInfo(_JsonFile, schema=1, made_by="prepare", what="dataset info", where="dataset_info"):
    """Where the data came from, what its classes are, and how its masks are read."""

    source: str  # builtin | folder | digits | imagefolder | csv
    root: str  # the folder the files are under
    classes: tuple[str, ...]  # class names by id
    ignore_index: int  # the mask value left out of loss and metrics (classification: -100, none)
    task: str = "segmentation"
    masks: MaskCode = MaskCode()  # stored values -> class ids


def count_columns(num_classes: int) -> list[str]:
    """Names of the per-class pixel count columns, in class-id order."""
    return [f"px_{c}" for c in range(num_classes)]


# group: the image's group (data.groups: a video, a patient, a site; empty where no groups are configured);
# group_from: where it came from: pattern | column | id (neither gave one, so the image is a group of its own)
GROUP_COLUMNS = ("group", "group_from")
GROUP_GIVEN = ("pattern", "column")  # the group_from values where data.groups gave the group (else: id)
ERROR_COLUMNS = ("path_error", "image_error", "mask_error", "label_error")  # filled where a file cannot be used
# orientation: the EXIF orientation tag (1: as stored; 2-8 would mirror or rotate the image when shown)
IMAGE_COLUMNS = ("width", "height", "channels", "mode", "bits", "brightness", "orientation", "sha256", "dhash")
MASK_COLUMNS = ("mask_width", "mask_height", "mask_mode", "mask_bits", "mask_sha256", "region_sha256")
INTEGER_COLUMNS = ("width", "height", "channels", "bits", "orientation", "mask_width", "mask_height", "mask_bits",
                   "px_ignore", "px_invalid", "label")  # fmt: skip
_TEXT_COLUMNS = ("id", "split", *GROUP_COLUMNS, "invalid_values", "sha256", "mask_sha256", "region_sha256", "dhash",
                 "mode", "mask_mode", *ERROR_COLUMNS)  # fmt: skip


def manifest_columns(num_classes: int) -> list[str]:
    counts = [*count_columns(num_classes), "px_ignore", "px_invalid", "invalid_values"]
    paths = ["image_path", "mask_path", "region_path"]
    return ["id", "split", *GROUP_COLUMNS, *paths, "label", *IMAGE_COLUMNS, *MASK_COLUMNS, *counts, *ERROR_COLUMNS]


def usable(frame: pd.DataFrame) -> pd.Series:
    """Rows whose files could all be read."""
    return frame[list(ERROR_COLUMNS)].isna().all(axis=1)


@dataclass(frozen=True, eq=False)
class Manifest(_HandOff, schema=4, made_by="prepare", what="manifest", where="manifest"):  # 4: groups
    """One row per image: paths, split, group, size, content hashes of image and mask, pixels per class, read
    errors. ``split`` is the one record of where an image ended (a carved val included: data.val_split).

    Its schema is its columns: a file without :func:`manifest_columns`' fixed ones is of another schema. Images
    and masks are pinned by their sha256, so a stage that reads files under ``data.root`` through the manifest
    reruns whenever one of them changes.
    """

    rows: pd.DataFrame

    @classmethod
    def load(cls, path: Path) -> Self:
        if not path.is_file():
            raise _missing(path, cls.what, cls.made_by)
        rows = pd.read_csv(path, dtype=dict.fromkeys(_TEXT_COLUMNS, str), keep_default_na=True)
        names = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=lambda c: c in GROUP_COLUMNS)
        rows[names.columns] = names.replace("", np.nan)  # a group named NA, None or null stays a name: empty is none
        absent = [c for c in manifest_columns(0) if c not in rows.columns]
        if absent:
            raise _other_schema(path, cls.what, f"without {', '.join(absent)}", cls.schema, cls.made_by)
        return cls(rows)

    def write(self, paths: PathsConfig) -> Path:
        path = self.path(paths)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.rows.to_csv(path, index=False)
        return path

    def split(self, name: str) -> pd.DataFrame:
        """The readable rows of one split, indexed from 0; an empty split is an error naming the file."""
        rows = self.rows[(self.rows["split"] == name) & usable(self.rows)]
        if rows.empty:
            raise DataError(f"{self.what} ({self.made_by}): split '{name}' has no readable images")
        return rows.reset_index(drop=True)

    @property
    def per_split(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.rows["split"].value_counts(sort=False).items()}

    @property
    def unreadable(self) -> int:
        """Rows with a read error (validate reports them)."""
        return int((~usable(self.rows)).sum())


@dataclass(frozen=True, eq=False)
class AcceptedManifest(Manifest, made_by="validate", what="accepted manifest", where="accepted"):
    """The manifest rows that passed validation: what every later stage reads."""


# ---------------------------------------------------------------------------------------------------------------
# validate


@dataclass(frozen=True)
class Failure:
    file: str  # the file, or the class / statistic for dataset-level checks
    check: str
    severity: str  # error | warning
    value: str  # what was found
    expected: str  # what passing looks like


@dataclass(frozen=True)
class CheckOutcome:
    check: str
    severity: str
    success: bool | None  # None: nothing to check
    failing: int
    note: str = ""


@dataclass(frozen=True)
class DriftRow:
    statistic: str
    current: float
    reference: float
    change: float
    threshold: float
    exceeds: bool


@dataclass(frozen=True)
class ValidationSummary(_JsonFile, schema=1, made_by="validate", what="validation summary", where="validation_summary"):
    """What validate found: every input accepted or set aside, each check's outcome, every failure, drift."""

    success: bool
    mode: str  # validate.on_error: fail | quarantine
    inputs: int
    accepted: int
    quarantined: int
    checks: tuple[CheckOutcome, ...] = ()
    failures: tuple[Failure, ...] = ()
    drift: tuple[DriftRow, ...] = ()
    reference: str = "none"  # what drift was measured against
    data_docs: str = ""  # the Great Expectations Data Docs index

    @property
    def accounted(self) -> bool:
        """Every input is accounted for: accepted or set aside."""
        return self.inputs == self.accepted + self.quarantined

    @property
    def drifting(self) -> list[DriftRow]:
        """The drift statistics beyond their thresholds."""
        return [d for d in self.drift if d.exceeds]

    def accounting(self) -> str:
        """The accounting every report states: every input accepted, or set aside to go on (``quarantine``) or
        rejected as the reason to stop (``fail``)."""
        set_aside = "quarantined" if self.mode == "quarantine" else "rejected"
        return f"{self.inputs} inputs = {self.accepted} accepted + {self.quarantined} {set_aside}"

    def headline(self) -> str:
        return f"{'passed' if self.success else 'failed'}: {self.accounting()}"

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {"accounted": self.accounted}


# ---------------------------------------------------------------------------------------------------------------
# balance


@dataclass(frozen=True)
class ClassWeights(_JsonFile, schema=1, made_by="balance", what="class weights", where="class_weights"):
    """The loss's class weights and what they were computed from (train split)."""

    method: str  # balance.method
    sampler: str  # balance.sampler: none | repeat_factor
    classes: tuple[str, ...]
    pixel_counts: tuple[int, ...]  # train pixels (classification: images) per class
    frequencies: tuple[float, ...]
    weights: tuple[float, ...]  # mean 1, 0 for absent classes
    mean_repeat_factor: float

    def rare_ids(self) -> tuple[int, ...]:
        """Ids of the classes present in train with less than an even share of it (1 / classes)."""
        even = 1 / len(self.classes)
        return tuple(i for i, share in enumerate(self.frequencies) if 0 < share < even)

    def rarest(self, count: int) -> list[str]:
        """The ``count`` classes with the fewest train pixels (images), rarest first."""
        order = sorted(zip(self.pixel_counts, self.classes, strict=True))
        return [name for _, name in order[:count]]


@dataclass(frozen=True, eq=False)
class SampleWeights(_HandOff, schema=1, made_by="balance", what="sample weights", where="sample_weights"):
    """Per train image, how often the sampler draws it relative to the others (repeat factors)."""

    COLUMNS: ClassVar[tuple[str, ...]] = ("id", "image_path", "repeat_factor")

    table: pd.DataFrame

    @classmethod
    def load(cls, path: Path) -> Self:
        if not path.is_file():
            raise _missing(path, cls.what, cls.made_by)
        table = pd.read_csv(path, dtype={"id": str})
        if absent := [c for c in cls.COLUMNS if c not in table.columns]:
            raise _other_schema(path, cls.what, f"without {', '.join(absent)}", cls.schema, cls.made_by)
        return cls(table)

    def write(self, paths: PathsConfig) -> Path:
        path = self.path(paths)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.table[list(self.COLUMNS)].to_csv(path, index=False)
        return path

    def for_rows(self, rows: pd.DataFrame) -> np.ndarray:
        """Repeat factors aligned with ``rows`` (the train rows training uses); every row must have one."""
        factors = self.table.set_index("image_path")["repeat_factor"]
        missing = set(rows["image_path"]) - set(factors.index)
        if missing:
            raise MissingInput(
                f"{self.what} have no repeat factor for {len(missing)} train image(s), e.g. {sorted(missing)[0]}; "
                f"{_run_hint(self.made_by)}"
            )
        return factors.loc[rows["image_path"]].to_numpy(dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------------
# train


@dataclass(frozen=True)
class ModelMeta(_HandOff, schema=2, made_by="train", what="model", where="weights"):
    """Everything about a trained model but its weights, stored beside them in ``model.pt``: how to rebuild it, its
    classes, and the preprocessing it expects, so that evaluation, registration, ``predict`` and the served model all
    take an image to the model the one way training decided (:meth:`visionflow.inference.Inference.of` reads it).
    """

    task: str  # segmentation | classification
    arch: str
    encoder: str
    classes: tuple[str, ...]
    ignore_index: int
    input_size: tuple[int, int] | None  # (height, width) images are brought to; None: their own size
    input_policy: str  # resize | pad | window: how an image reaches input_size, and how logits go back to its size
    mean: tuple[float, float, float]  # per-channel normalisation of [0, 1] RGB
    std: tuple[float, float, float]
    threshold: float | None = None  # binary segmentation: sigmoid > threshold is foreground (chosen on val)
    overlap: float = 0.5  # window policy: share of a window (input_size) its neighbour covers
    flip: bool = False  # window policy: horizontal-flip test-time augmentation
    scale: float = 1.0  # window policy: images are shrunk by this before windowing (train.input.scale)
    epoch: int = 0  # the epoch these weights are from (the best by `metric`)
    epochs: int = 0  # epochs trained in all
    metric: str = ""  # the val metric that chose the epoch, e.g. val_miou
    score: float | None = None  # its value
    averaged: bool = False  # the weights are the moving average of the training's weights (train.ema_decay)

    @classmethod
    def load(cls, path: Path) -> Self:
        return cls.from_saved(path, _load_model_file(path))

    @classmethod
    def from_saved(cls, path: Path, saved: dict[str, Any]) -> Self:
        raw = saved.get("meta", {}) if isinstance(saved, dict) else {}
        found = raw.get("schema", 1)
        if found != cls.schema:
            raise _other_schema(path, cls.what, found, cls.schema, cls.made_by)
        return _from_dict(cls, raw)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema} | _plain(asdict(self))  # type: ignore[call-overload]

    def save(self, path: Path, state_dict: dict[str, Any]) -> Path:
        """Write the weights with this metadata (plain tensors and values: ``weights_only=True`` loads it), next to
        the final name and then renamed onto it, so that a kill mid-write leaves the previous file whole."""
        import os

        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with partial.open("wb") as handle:
            torch.save({"state_dict": state_dict, "meta": self.to_dict()}, handle)
        os.replace(partial, path)
        return path

    def describe(self) -> dict[str, Any]:
        """The metadata as MLflow shows it with the registered model."""
        return {k: v for k, v in self.to_dict().items() if v is not None}


def _load_model_file(path: Path) -> dict[str, Any]:
    import torch

    if not Path(path).is_file():
        raise _missing(Path(path), ModelMeta.what, ModelMeta.made_by)
    return torch.load(path, map_location="cpu", weights_only=True)


def load_weights_and_meta(path: Path) -> tuple[dict[str, Any], ModelMeta]:
    """The state dict and the metadata of a ``model.pt`` (one read)."""
    saved = _load_model_file(path)
    return saved["state_dict"], ModelMeta.from_saved(path, saved)


@dataclass(frozen=True)
class TrainingRun(_JsonFile, schema=1, made_by="train", what="MLflow run record", where="run_info"):
    """The MLflow run train opened for this model; evaluate and register log into it too."""

    run_id: str
    experiment_id: str
    tracking_uri: str


# ---------------------------------------------------------------------------------------------------------------
# evaluate


# the figures `dvc metrics show` shows per split (those of the model's task): segmentation, classification, then
# the mean under corruptions and its ratio to the clean score, and a binary model's threshold
HEADLINE = ("miou", "mean_dice", "pixel_accuracy", "mean_class_accuracy", "accuracy", "balanced_accuracy", "macro_f1",
            "corruption_mean", "corruption_ratio", "threshold")  # fmt: skip


@dataclass(frozen=True)
class EvaluationMetrics(_JsonFile, schema=2, made_by="evaluate", what="evaluation metrics", where="metrics"):
    """The model's scores on val, and on test where the data has one: undefined scores are null. Per split: the
    images scored and the classes absent from it (left out of the means). :meth:`headline` is what ``dvc metrics
    show`` shows."""

    val: dict[str, float | None]
    test: dict[str, float | None] | None = None  # null: the data has no test split
    images: dict[str, int] = field(default_factory=dict)
    absent_classes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def splits(self) -> tuple[str, ...]:
        return ("val",) if self.test is None else ("val", "test")

    def headline(self) -> dict[str, dict[str, float | int | None]]:
        """Per split, the figures a person compares runs by (:data:`HEADLINE`, those the task has) and the images
        scored; the per-class figures and the timings stay in metrics.json."""
        return {split: {k: self.scores(split)[k] for k in HEADLINE if k in self.scores(split)}
                | {"images": self.images.get(split)} for split in self.splits}  # fmt: skip

    def scores(self, split: str) -> dict[str, float | None]:
        """One split's figures; a split that was not scored is an error naming the file."""
        if split not in self.splits:
            raise MissingInput(
                f"{self.what}: no '{split}' scores (evaluate scored {', '.join(self.splits)}; the data has "
                f"no {split} split)"
            )
        return self.val if split == "val" else self.test  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------------
# plan


@dataclass(frozen=True)
class Decision:
    """One planned train setting and why (visionflow.planning.rules)."""

    key: str  # the params key, e.g. train.batch_size
    value: Any
    reason: str
    pinned: bool = False  # set in params: kept as it is


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return str(value)


@dataclass(frozen=True)
class PlanFile(_JsonFile, schema=1, made_by="plan", what="plan", where="plan_file"):
    """The plan: the train settings chosen for this data, machine kind and budget, each with its reason."""

    machine: str  # the machine kind the speeds were measured on
    budget_minutes: float
    estimated_minutes: float  # training with its validation passes, at the measured speed
    decisions: tuple[Decision, ...]
    notes: tuple[str, ...] = ()
    fingerprint: dict[str, Any] = field(default_factory=dict)  # the train split's DataPrint

    def value(self, key: str) -> Any:
        return next(d.value for d in self.decisions if d.key == key)

    def overrides(self) -> dict[str, Any]:
        """The planned values as dotted params keys (what train runs with where params say ``auto``)."""
        return {d.key: d.value for d in self.decisions}

    def table(self) -> str:
        """The decisions as a Markdown table, one reason each."""
        rows = ["| key | value | why |", "|---|---|---|"]
        for d in self.decisions:
            rows.append(f"| `{d.key}` | `{_show(d.value)}` | {'pinned in params' if d.pinned else d.reason} |")
        return "\n".join(rows)

    def report(self) -> str:
        """plan.md: the table, the budget and estimate, the notes."""
        lines = [f"# Plan ({self.machine})", "", self.table(), "",
                 f"Budget {self.budget_minutes:g} min; estimated {self.estimated_minutes:.1f} min of training "
                 "with its validation passes, at the measured speed."]  # fmt: skip
        return "\n".join(lines + [f"- {note}" for note in self.notes]) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# register


@dataclass(frozen=True)
class Registration(_JsonFile, schema=1, made_by="register", what="registration", where="registration"):
    """The version register logged, and the alias the gate gave it."""

    name: str
    version: str
    alias: str
    metric: str
    value: float
    champion_before: str | None
    promoted: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class GateResult:
    """The promotion gate's numbers: the paired comparison of candidate and champion on the same images."""

    promote: bool
    reasons: tuple[str, ...]
    metric: str  # what the per-image scores are
    images: int  # paired images used
    candidate_mean: float
    champion_mean: float
    mean_difference: float
    ci_low: float
    ci_high: float
    confidence: float
    class_changes: dict[str, float] = field(default_factory=dict)  # candidate - champion per class


@dataclass(frozen=True)
class GateDecision(_JsonFile, schema=2, made_by="register", what="gate decision", where="decision"):
    """What the promotion gate decided for a version, and why (register stage, ``visionflow promote``)."""

    model_name: str
    version: str
    alias: str  # what the candidate got: champion | challenger
    promoted: bool
    forced: bool
    champion_before: str | None
    reasons: tuple[str, ...]
    gate: GateResult | None = None
    split: str | None = None  # the eval split both models were scored on; null: no comparison was made
    decided_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def report(self) -> list[str]:
        """The decision as console lines."""
        against = f"champion was v{self.champion_before}" if self.champion_before else "no champion before"
        if self.gate is not None:
            against += f"; both scored on {self.split}"
        return [f"{self.model_name} version {self.version} -> @{self.alias} ({against})"] + [
            f"  - {reason}" for reason in self.reasons
        ]
