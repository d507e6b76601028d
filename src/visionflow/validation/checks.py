"""The check catalogue: every data check as one typed spec, and how its findings become failures and a quarantine.

:data:`CATALOGUE` is the one table of checks. A spec names the frame it judges (manifest rows, the accepted images
per split, the class table, the drift table), its default severity, what passing looks like in words, the columns
it reads and a typed :data:`Rule`. The few parts that depend on params.yaml (the smallest image size, the class
share bounds, the near-duplicate distance in the wording, the convert-or-reject severities) are :class:`Setting`
and :class:`ConvertOrReject` placeholders that :func:`checks` resolves from ``validate``, together with the
``validate.severity`` overrides.

No Great Expectations here: :mod:`visionflow.validation.expectations` turns a rule into an expectation and hands
back a :class:`Verdict` per check, which :func:`judge` turns into the summary's outcome and failures.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from visionflow.config import Config, ValidateConfig
from visionflow.errors import ConfigError
from visionflow.handoffs import GROUP_GIVEN, CheckOutcome, Failure

__all__ = [
    "CATALOGUE",
    "FRAMES",
    "INDEX",
    "Between",
    "Check",
    "CheckSpec",
    "ConvertOrReject",
    "Frame",
    "InSet",
    "IsNull",
    "PairEqual",
    "Rule",
    "Setting",
    "Verdict",
    "check_names",
    "checks",
    "judge",
    "quarantine_table",
    "rule_columns",
]

Frame = Literal["rows", "splits", "classes", "drift"]
FRAMES: tuple[Frame, ...] = ("rows", "splits", "classes", "drift")  # the order the stage judges them in
INDEX: dict[Frame, str] = {"rows": "file", "splits": "split", "classes": "class", "drift": "statistic"}  # names a row
Severity = Literal["error", "warning"]
Task = Literal["segmentation", "classification"]


@dataclass(frozen=True)
class Setting:
    """A value taken from ``validate`` in params.yaml, by its dotted name (``class_share.min``)."""

    name: str

    def resolve(self, settings: ValidateConfig) -> Any:
        return functools.reduce(getattr, self.name.split("."), settings)


@dataclass(frozen=True)
class ConvertOrReject:
    """A severity chosen by a ``convert | reject`` (or ``apply | reject``) setting: a converted input is reported
    (warning), a rejected one fails (error)."""

    setting: str

    def resolve(self, settings: ValidateConfig) -> Severity:
        return "error" if getattr(settings, self.setting) == "reject" else "warning"


Bound = float | Setting | None


@dataclass(frozen=True)
class IsNull:
    """Passes where ``column`` is empty (an error column, a ``*_of`` pointer to another file)."""

    column: str


@dataclass(frozen=True)
class InSet:
    """Passes where ``column`` holds one of ``values``."""

    column: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Between:
    """Passes where ``low <= column <= high``; a None bound is open."""

    column: str
    low: Bound = None
    high: Bound = None


@dataclass(frozen=True)
class PairEqual:
    """Passes where two columns hold the same value; a row missing either is not judged (another check fails it)."""

    first: str
    second: str


Rule = IsNull | InSet | Between | PairEqual


def rule_columns(rule: Rule) -> tuple[str, ...]:
    """The columns a rule reads."""
    return (rule.first, rule.second) if isinstance(rule, PairEqual) else (rule.column,)


@dataclass(frozen=True)
class CheckSpec:
    """One entry of the catalogue, before params.yaml fills in its settings."""

    name: str  # short id used in reports and in validate.severity
    frame: Frame  # what it judges: manifest rows, accepted images per split, the class table, the drift table
    severity: Severity | ConvertOrReject  # the default, before validate.severity overrides
    expected: str  # what passing looks like, in words; {name} fields are filled from validate
    rule: Rule
    shows: tuple[str, ...]  # columns shown as the failing value
    task: Task | None = None  # the only task it applies to; None: both
    # a column the check is about: empty throughout (no groups configured, no val split), the check has nothing
    # to check (n/a) rather than passing
    needs: str | None = None

    @property
    def reads(self) -> tuple[str, ...]:
        """Every column of its frame the check needs: the rule's, the ones shown and the one it is about."""
        return tuple(dict.fromkeys((*rule_columns(self.rule), *self.shows, *([self.needs] if self.needs else []))))


_SEG: Task = "segmentation"
_NEAR = "no near copy (dHash distance <= {near_duplicate_distance})"

CATALOGUE: tuple[CheckSpec, ...] = (
    # name, frame, default severity, what passes, rule, columns shown, task
    CheckSpec("inside_root", "rows", "error", "files inside the data root", IsNull("path_error"), ("path_error",)),
    CheckSpec("image_decodes", "rows", "error", "the image decodes completely", IsNull("image_error"),
              ("image_error",)),
    CheckSpec("mask_decodes", "rows", "error", "a single-channel mask exists and decodes completely",
              IsNull("mask_error"), ("mask_error",), _SEG),
    CheckSpec("label_known", "rows", "error", "the image has one class from the class list", IsNull("label_error"),
              ("label_error",), "classification"),
    CheckSpec("bit_depth", "rows", "error", "8 bits per channel", InSet("bits", (8,)), ("mode", "bits")),
    CheckSpec("rgb", "rows", ConvertOrReject("channels"), "an RGB image (grayscale and RGBA are converted)",
              InSet("mode", ("RGB",)), ("mode",)),
    CheckSpec("mask_bit_depth", "rows", ConvertOrReject("masks_16bit"), "an 8-bit mask (L or palette)",
              InSet("mask_bits", (8,)), ("mask_mode",), _SEG),
    CheckSpec("exif_orientation", "rows", ConvertOrReject("exif_orientation"),
              "shown as stored: no EXIF orientation that mirrors or rotates it (validate.exif_orientation: apply "
              "turns it upright)", InSet("orientation", (1,)), ("orientation",)),
    CheckSpec("min_size", "rows", "error", "width and height at least {min_image_size} px",
              Between("min_side", low=Setting("min_image_size")), ("width", "height")),
    CheckSpec("mask_width", "rows", "error", "mask as wide as its image", PairEqual("width", "mask_width"),
              ("width", "mask_width"), _SEG),
    CheckSpec("mask_height", "rows", "error", "mask as high as its image", PairEqual("height", "mask_height"),
              ("height", "mask_height"), _SEG),
    CheckSpec("mask_values", "rows", "error", "mask values are class ids or the ignore index (or in data.masks)",
              Between("px_invalid", low=0, high=0), ("invalid_values",), _SEG),
    CheckSpec("mask_labelled", "rows", "error", "at least one labelled (not ignored) pixel",
              Between("labelled_px", low=1), ("px_ignore",), _SEG),
    CheckSpec("exact_duplicate", "rows", "error", "no other file with the same bytes", IsNull("duplicate_of"),
              ("duplicate_of", "split")),
    CheckSpec("near_duplicate_leak", "rows", "error", f"{_NEAR} in another split", IsNull("near_leak_of"),
              ("near_leak_of", "split")),
    CheckSpec("near_duplicate", "rows", "warning", f"{_NEAR} in the same split", IsNull("near_duplicate_of"),
              ("near_duplicate_of",)),
    CheckSpec("one_split", "rows", "error", "each image name in one split only", IsNull("same_name_as"),
              ("same_name_as", "split")),
    CheckSpec("group_unmatched", "rows", "warning", "a group from data.groups (the pattern found in the file "
              "name, or the csv column); else the image is a group of its own", InSet("group_from", GROUP_GIVEN),
              ("group",), needs="group_from"),
    CheckSpec("splits_not_empty", "splits", "error", "at least one accepted image in each required split",
              Between("accepted_images", low=1), ("accepted_images",)),
    CheckSpec("group_leak", "splits", "warning", "no group (data.groups: a video, a patient, a site) in both train "
              "and this split", IsNull("shared_with_train"), ("shared_with_train",), needs="groups"),
    CheckSpec("classes_in_train", "classes", "error", "every class present in the train split",
              Between("train_pixels", low=1), ("train_pixels",)),
    CheckSpec("classes_in_val", "classes", "warning", "every class of train also in val, where val scores it (a "
              "carved val: another data.val_split.seed or share)", Between("val_images", low=1),
              ("train_images", "val_images"), needs="val_images"),
    CheckSpec("class_share", "classes", "warning", "train pixel share within [{class_share.min}, {class_share.max}]",
              Between("train_share", low=Setting("class_share.min"), high=Setting("class_share.max")),
              ("train_share",)),
    CheckSpec("drift", "drift", "warning", "statistics within the drift thresholds of the last accepted data",
              InSet("exceeds", (False,)), ("current", "reference", "change", "threshold")),
)  # fmt: skip


@dataclass(frozen=True)
class Check:
    """A catalogue entry with params.yaml applied: its severity final, its rule's bounds numbers."""

    name: str
    frame: Frame
    severity: Severity
    expected: str
    rule: Rule
    shows: tuple[str, ...]
    needs: str | None = None  # see CheckSpec.needs


def check_names() -> list[str]:
    """Every check in the catalogue, of both tasks, in catalogue order."""
    return [spec.name for spec in CATALOGUE]


def checks(config: Config) -> list[Check]:
    """The checks of the configured task, with ``validate``'s settings and ``validate.severity`` overrides applied.

    An override naming no check is a :class:`~visionflow.errors.ConfigError` that lists the valid names.
    """
    settings = config.validate_
    unknown = sorted(set(settings.severity) - set(check_names()))
    if unknown:
        raise ConfigError(
            f"params.yaml: validate.severity names unknown check(s) {', '.join(unknown)}; "
            f"valid checks: {', '.join(check_names())}"
        )
    task = config.project.task
    return [_resolve(spec, settings) for spec in CATALOGUE if spec.task in (None, task)]


def _resolve(spec: CheckSpec, settings: ValidateConfig) -> Check:
    severity = spec.severity.resolve(settings) if isinstance(spec.severity, ConvertOrReject) else spec.severity
    rule = spec.rule
    if isinstance(rule, Between):
        rule = Between(rule.column, _bound(rule.low, settings), _bound(rule.high, settings))
    expected = spec.expected.format(**dict(settings))  # "{class_share.min}" reads the nested section
    severity = settings.severity.get(spec.name, severity)
    return Check(spec.name, spec.frame, severity, expected, rule, spec.shows, spec.needs)


def _bound(value: Bound, settings: ValidateConfig) -> float | None:
    return value.resolve(settings) if isinstance(value, Setting) else value


# ---------------------------------------------------------------------------------------------------------------
# findings


@dataclass(frozen=True)
class Verdict:
    """What the expectation engine found for one check on one frame."""

    check: Check
    success: bool | None  # None: nothing to check (an empty frame)
    offending: tuple[Any, ...] | None = None  # index values (:data:`INDEX`) of failing rows; None: none named
    observed: Any = None  # what the engine saw, where it names no rows


def judge(verdict: Verdict, frame: pd.DataFrame) -> tuple[CheckOutcome, list[Failure]]:
    """The check's line in the summary, and one failure per offending row (one for the whole table where the
    engine names no rows), with the row's shown columns as the value."""
    check = verdict.check
    if verdict.success is None:
        return CheckOutcome(check.name, check.severity, None, 0, "nothing to check"), []
    failures = [] if verdict.success else _failures(verdict, frame)
    return CheckOutcome(check.name, check.severity, verdict.success, len(failures)), failures


def _failures(verdict: Verdict, frame: pd.DataFrame) -> list[Failure]:
    check = verdict.check
    if verdict.offending is None:
        return [Failure("(dataset)", check.name, check.severity, f"{verdict.observed}", check.expected)]
    index = INDEX[check.frame]
    keyed = frame.drop_duplicates(index).set_index(index, drop=False)
    failures = []
    for key in verdict.offending:
        row = keyed.loc[key]
        value = ", ".join(f"{c}={_plain(row[c])}" for c in check.shows if c in row and pd.notna(row[c]))
        failures.append(Failure(str(key), check.name, check.severity, value, check.expected))
    return failures


def _plain(value: Any) -> Any:
    """480 rather than 480.0: counts and sizes read back from mixed columns as floats."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


_QUARANTINE_COLUMNS = ["file", "id", "split", "checks", "reasons"]


def quarantine_table(rows: pd.DataFrame, failures: list[Failure]) -> pd.DataFrame:
    """One row per file with an error-severity failure: the files set aside, each with every reason."""
    by_file: dict[str, list[Failure]] = {}
    for failure in failures:
        if failure.severity == "error":
            by_file.setdefault(failure.file, []).append(failure)
    keyed = rows.drop_duplicates("file").set_index("file", drop=False)
    records = [
        {
            "file": file,
            "id": keyed.at[file, "id"],
            "split": keyed.at[file, "split"],
            "checks": " ".join(f.check for f in found),
            "reasons": "; ".join(f"{f.check}: {f.value or 'failed'} (expected {f.expected})" for f in found),
        }
        for file, found in by_file.items()
    ]
    return pd.DataFrame(records, columns=_QUARANTINE_COLUMNS)
