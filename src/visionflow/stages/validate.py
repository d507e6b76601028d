"""validate: Great Expectations checkpoints over the manifest, with nothing lost.

Row checks judge each image/mask pair; failing pairs with severity ``error`` stop the pipeline
(``validate.on_error: fail``) or are set aside with their reasons (``quarantine``). Dataset checks (splits,
classes in train, class shares) and drift against the last accepted dataset run on the accepted rows.
Every input ends up accepted or quarantined, and the reports say so: a JSON summary, a markdown report,
a console table, the quarantine list and GX Data Docs. Later stages read only the accepted rows.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from visionflow.config import Config
from visionflow.data.manifest import read_dataset_info, read_manifest, write_manifest
from visionflow.validation import class_table, dataset_statistics, drift_table, row_features

__all__ = ["Check", "DataValidationError", "Failure", "ValidateResult", "checks", "run"]

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no usage statistics from a pipeline run

Frame = Literal["rows", "splits", "classes", "drift"]


class DataValidationError(RuntimeError):
    """The data broke at least one error-severity check; the message names every offending file."""

    exit_code = 4  # the CLI's exit status: bad data, which no retry can fix (the Prefect flows read it)


@dataclass(frozen=True)
class Check:
    name: str  # short id used in reports and in validate.severity
    frame: Frame  # what it reads: manifest rows, accepted rows, the class table, or the drift table
    severity: str  # error | warning (after validate.severity overrides)
    expected: str  # what passing looks like, in words
    value_columns: tuple[str, ...]  # columns shown as the failing value
    expectation: Any  # a great_expectations Expectation


@dataclass
class Failure:
    file: str  # the file, or the class / statistic for dataset-level checks
    check: str
    severity: str
    value: str
    expected: str


@dataclass
class ValidateResult:
    success: bool
    mode: str
    inputs: int
    accepted: int
    quarantined: int
    checks: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)
    reference: str = "none"


def _index_column(frame: Frame) -> str:
    return {"rows": "file", "splits": "split", "classes": "class", "drift": "statistic"}[frame]


def checks(config: Config) -> list[Check]:
    """Every check with its frame and severity; ``validate.severity`` overrides the defaults by name."""
    import great_expectations.expectations as gxe

    v = config.validate_
    near = v.near_duplicate_distance
    share = v.class_share
    convert = {"convert": "warning", "reject": "error"}
    either = "either_value_is_missing"
    specs: list[tuple[str, Frame, str, str, tuple[str, ...], Any]] = [
        (
            "inside_root",
            "rows",
            "error",
            "files inside the data root",
            ("path_error",),
            gxe.ExpectColumnValuesToBeNull(column="path_error"),
        ),
        (
            "image_decodes",
            "rows",
            "error",
            "the image decodes completely",
            ("image_error",),
            gxe.ExpectColumnValuesToBeNull(column="image_error"),
        ),
        (
            "mask_decodes",
            "rows",
            "error",
            "a single-channel mask exists and decodes completely",
            ("mask_error",),
            gxe.ExpectColumnValuesToBeNull(column="mask_error"),
        ),
        (
            "label_known",
            "rows",
            "error",
            "the image has one class from the class list",
            ("label_error",),
            gxe.ExpectColumnValuesToBeNull(column="label_error"),
        ),
        (
            "bit_depth",
            "rows",
            "error",
            "8 bits per channel",
            ("mode", "bits"),
            gxe.ExpectColumnValuesToBeInSet(column="bits", value_set=[8]),
        ),
        (
            "rgb",
            "rows",
            convert[v.channels],
            "an RGB image (grayscale and RGBA are converted)",
            ("mode",),
            gxe.ExpectColumnValuesToBeInSet(column="mode", value_set=["RGB"]),
        ),
        (
            "mask_bit_depth",
            "rows",
            convert[v.masks_16bit],
            "an 8-bit mask (L or palette)",
            ("mask_mode",),
            gxe.ExpectColumnValuesToBeInSet(column="mask_bits", value_set=[8]),
        ),
        (
            "min_size",
            "rows",
            "error",
            f"width and height at least {v.min_image_size} px",
            ("width", "height"),
            gxe.ExpectColumnValuesToBeBetween(column="min_side", min_value=v.min_image_size),
        ),
        (
            "mask_width",
            "rows",
            "error",
            "mask as wide as its image",
            ("width", "mask_width"),
            gxe.ExpectColumnPairValuesToBeEqual(column_A="width", column_B="mask_width", ignore_row_if=either),
        ),
        (
            "mask_height",
            "rows",
            "error",
            "mask as high as its image",
            ("height", "mask_height"),
            gxe.ExpectColumnPairValuesToBeEqual(column_A="height", column_B="mask_height", ignore_row_if=either),
        ),
        (
            "mask_values",
            "rows",
            "error",
            "mask values are class ids or the ignore index",
            ("invalid_values",),
            gxe.ExpectColumnValuesToBeBetween(column="px_invalid", min_value=0, max_value=0),
        ),
        (
            "mask_labelled",
            "rows",
            "error",
            "at least one labelled (not ignored) pixel",
            ("px_ignore",),
            gxe.ExpectColumnValuesToBeBetween(column="labelled_px", min_value=1),
        ),
        (
            "exact_duplicate",
            "rows",
            "error",
            "no other file with the same bytes",
            ("duplicate_of", "split"),
            gxe.ExpectColumnValuesToBeNull(column="duplicate_of"),
        ),
        (
            "near_duplicate_leak",
            "rows",
            "error",
            f"no near copy (dHash distance <= {near}) in another split",
            ("near_leak_of", "split"),
            gxe.ExpectColumnValuesToBeNull(column="near_leak_of"),
        ),
        (
            "near_duplicate",
            "rows",
            "warning",
            f"no near copy (dHash distance <= {near}) in the same split",
            ("near_duplicate_of",),
            gxe.ExpectColumnValuesToBeNull(column="near_duplicate_of"),
        ),
        (
            "one_split",
            "rows",
            "error",
            "each image name in one split only",
            ("same_name_as", "split"),
            gxe.ExpectColumnValuesToBeNull(column="same_name_as"),
        ),
        (
            "splits_not_empty",
            "splits",
            "error",
            "at least one accepted image in each required split",
            ("accepted_images",),
            gxe.ExpectColumnValuesToBeBetween(column="accepted_images", min_value=1),
        ),
        (
            "classes_in_train",
            "classes",
            "error",
            "every class present in the train split",
            ("train_pixels",),
            gxe.ExpectColumnValuesToBeBetween(column="train_pixels", min_value=1),
        ),
        (
            "class_share",
            "classes",
            "warning",
            f"train pixel share within [{share.min}, {share.max}]",
            ("train_share",),
            gxe.ExpectColumnValuesToBeBetween(column="train_share", min_value=share.min, max_value=share.max),
        ),
        (
            "drift",
            "drift",
            "warning",
            "statistics within the drift thresholds of the last accepted data",
            ("current", "reference", "change", "threshold"),
            gxe.ExpectColumnValuesToBeInSet(column="exceeds", value_set=[False]),
        ),
    ]
    unknown = set(v.severity) - {s[0] for s in specs}
    if unknown:
        raise ValueError(
            f"validate.severity names unknown checks {sorted(unknown)}; checks: {', '.join(s[0] for s in specs)}"
        )
    skip = _CLASSIFICATION_ONLY if config.project.task == "segmentation" else _SEGMENTATION_ONLY
    return [
        Check(name, frame, v.severity.get(name, sev), expected, cols, exp)
        for name, frame, sev, expected, cols, exp in specs
        if name not in skip
    ]


_SEGMENTATION_ONLY = frozenset(
    {"mask_decodes", "mask_bit_depth", "mask_width", "mask_height", "mask_values", "mask_labelled"}
)
_CLASSIFICATION_ONLY = frozenset({"label_known"})


class _Suites:
    """One ephemeral GX context whose checkpoints all write into one Data Docs site."""

    def __init__(self, docs_dir: Path) -> None:
        import great_expectations as gx

        self.gx = gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)  # our table is the output
        store = {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())}
        site = {
            "class_name": "SiteBuilder",
            "store_backend": store,
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
        self.context.add_data_docs_site(site_name="visionflow", site_config=site)
        self.source = self.context.data_sources.add_pandas("visionflow")

    def run(self, name: str, frame: pd.DataFrame, suite_checks: list[Check], index: str) -> list[Any]:
        gx = self.gx
        batch = self.source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        suite = self.context.suites.add(gx.ExpectationSuite(name=name))
        for check in suite_checks:
            check.expectation.meta = {"check": check.name, "expected": check.expected}
            check.expectation.severity = "critical" if check.severity == "error" else "warning"
            suite.add_expectation(check.expectation)
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )
        checkpoint = self.context.checkpoints.add(
            gx.Checkpoint(
                name=name,
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["visionflow"])],
                result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [index]},
            )
        )
        outcome = checkpoint.run(batch_parameters={"dataframe": frame})
        return [r for run in outcome.run_results.values() for r in run.results]


def _failures(check: Check, result: Any, frame: pd.DataFrame, index: str) -> list[Failure]:
    """One failure per offending row, or one for the whole table when GX names no rows."""
    entries = result.result.get("unexpected_index_list")
    if entries is None:
        observed = result.result.get("observed_value")
        return [Failure("(dataset)", check.name, check.severity, f"{observed}", check.expected)]
    keyed = frame.drop_duplicates(index).set_index(index, drop=False)
    failures = []
    for entry in entries:
        row = keyed.loc[entry[index]]
        value = ", ".join(f"{c}={_plain(row[c])}" for c in check.value_columns if c in row and pd.notna(row[c]))
        failures.append(Failure(str(entry[index]), check.name, check.severity, value, check.expected))
    return failures


def _plain(value: Any) -> Any:
    """480 rather than 480.0: counts and sizes read back from mixed columns as floats."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _set_aside(mode: str) -> str:
    """What failing inputs are called: set aside to go on (quarantine), or the reason to stop (fail)."""
    return "quarantined" if mode == "quarantine" else "rejected"


def _evaluate(
    suites: _Suites, name: str, frame: pd.DataFrame, suite_checks: list[Check], summary: ValidateResult
) -> list[Failure]:
    """Run one suite and record each check's outcome in ``summary``; returns the failures."""
    if frame.empty or not suite_checks:
        for check in suite_checks:
            summary.checks.append(
                {
                    "check": check.name,
                    "severity": check.severity,
                    "success": None,
                    "failing": 0,
                    "note": "nothing to check",
                }
            )
        return []
    index = _index_column(suite_checks[0].frame)
    by_name = {c.name: c for c in suite_checks}
    found: list[Failure] = []
    for result in suites.run(name, frame, suite_checks, index):
        check = by_name[result.expectation_config.meta["check"]]
        failures = [] if result.success else _failures(check, result, frame, index)
        summary.checks.append(
            {"check": check.name, "severity": check.severity, "success": bool(result.success), "failing": len(failures)}
        )
        found.extend(failures)
    summary.failures.extend(found)
    return found


def _quarantine_table(rows: pd.DataFrame, failures: list[Failure]) -> pd.DataFrame:
    errors = [f for f in failures if f.severity == "error"]
    by_file: dict[str, list[Failure]] = {}
    for failure in errors:
        by_file.setdefault(failure.file, []).append(failure)
    keyed = rows.set_index("file", drop=False)
    records = []
    for file, found in by_file.items():
        row = keyed.loc[file]
        row = row.iloc[0] if isinstance(row, pd.DataFrame) else row
        records.append(
            {
                "file": file,
                "id": row["id"],
                "split": row["split"],
                "checks": " ".join(f.check for f in found),
                "reasons": "; ".join(f"{f.check}: {f.value or 'failed'} (expected {f.expected})" for f in found),
            }
        )
    return pd.DataFrame(records, columns=["file", "id", "split", "checks", "reasons"])


def _write_reports(config: Config, summary: ValidateResult, quarantine: pd.DataFrame) -> None:
    paths = config.paths
    paths.validation.mkdir(parents=True, exist_ok=True)
    quarantine.to_csv(paths.quarantine, index=False)
    payload = asdict(summary) | {
        "accounted": summary.inputs == summary.accepted + summary.quarantined,
        "data_docs": (paths.data_docs / "index.html").as_posix(),
    }
    paths.validation_summary.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    paths.validation_report.write_text(markdown_report(summary, config.validate_.max_listed), encoding="utf-8")


def markdown_report(summary: ValidateResult, max_listed: int) -> str:
    """A short human summary (shown by the Prefect flow and logged to MLflow)."""
    status = "passed" if summary.success else "FAILED"
    lines = [
        f"# Data validation {status}",
        "",
        f"**{summary.inputs} inputs = {summary.accepted} accepted + {summary.quarantined} "
        f"{_set_aside(summary.mode)}** (on_error `{summary.mode}`)",
        "",
        "| check | severity | result | failing |",
        "|---|---|---|---:|",
    ]
    for check in summary.checks:
        result = {True: "ok", False: "**fail**" if check["severity"] == "error" else "warn", None: "n/a"}
        lines.append(f"| {check['check']} | {check['severity']} | {result[check['success']]} | {check['failing']} |")
    if summary.failures:
        lines += ["", "| file | check | severity | value | expected |", "|---|---|---|---|---|"]
        for f in summary.failures[:max_listed]:
            lines.append(f"| `{f.file}` | {f.check} | {f.severity} | {f.value} | {f.expected} |")
        if len(summary.failures) > max_listed:
            lines.append(f"\n... and {len(summary.failures) - max_listed} more in the JSON summary.")
    drifting = [d for d in summary.drift if d["exceeds"]]
    lines += [
        "",
        f"Drift against the last accepted data ({summary.reference}): "
        + (f"{len(drifting)} statistic(s) beyond threshold." if drifting else "within thresholds."),
    ]
    for d in drifting:
        lines.append(
            f"- {d['statistic']}: {d['reference']} -> {d['current']} (change {d['change']:+}, "
            f"threshold {d['threshold']})"
        )
    return "\n".join(lines) + "\n"


def _print_table(summary: ValidateResult, max_listed: int) -> None:
    print(
        f"validate: {summary.inputs} inputs = {summary.accepted} accepted + {summary.quarantined} "
        f"{_set_aside(summary.mode)} (on_error: {summary.mode})"
    )
    print(f"  {'check':<20} {'severity':<8} {'result':<6} failing")
    for check in summary.checks:
        result = {True: "ok", False: "FAIL" if check["severity"] == "error" else "warn", None: "-"}[check["success"]]
        print(f"  {check['check']:<20} {check['severity']:<8} {result:<6} {check['failing']}")
    for failure in summary.failures[:max_listed]:
        print(
            f"  ! {failure.file}: {failure.check} ({failure.severity}): {failure.value} (expected {failure.expected})"
        )
    if len(summary.failures) > max_listed:
        print(f"  ... {len(summary.failures) - max_listed} more in the JSON summary")


def run(config: Config) -> ValidateResult:
    paths, settings = config.paths, config.validate_
    manifest = read_manifest(paths.manifest)
    info = read_dataset_info(paths.dataset_info)
    all_checks = checks(config)
    rows = row_features(manifest, len(info.classes), settings.near_duplicate_distance)
    suites = _Suites(paths.data_docs)
    summary = ValidateResult(success=True, mode=settings.on_error, inputs=len(rows), accepted=0, quarantined=0)

    row_failures = _evaluate(suites, "rows", rows, [c for c in all_checks if c.frame == "rows"], summary)
    quarantine = _quarantine_table(rows, row_failures)
    accepted_rows = rows[~rows["file"].isin(quarantine["file"])]
    summary.accepted, summary.quarantined = len(accepted_rows), len(quarantine)

    counts = accepted_rows["split"].value_counts()
    splits = pd.DataFrame(
        {
            "split": settings.required_splits,
            "accepted_images": [int(counts.get(s, 0)) for s in settings.required_splits],
        }
    )
    _evaluate(suites, "splits", splits, [c for c in all_checks if c.frame == "splits"], summary)
    classes = class_table(accepted_rows, info.classes)
    _evaluate(suites, "classes", classes, [c for c in all_checks if c.frame == "classes"], summary)
    reference = _read_reference(paths.validation_reference)
    current = dataset_statistics(accepted_rows, info.classes) if len(accepted_rows) else None
    drift = drift_table(current, reference, settings.drift.model_dump()) if current else drift_table({}, None, {})
    summary.drift = drift.to_dict(orient="records")
    summary.reference = "none yet" if reference is None else f"{reference['images']} images"
    _evaluate(suites, "drift", drift, [c for c in all_checks if c.frame == "drift"], summary)

    errors = [f for f in summary.failures if f.severity == "error"]
    blocking = errors if settings.on_error == "fail" else [f for f in errors if f.file not in set(quarantine["file"])]
    summary.success = not blocking
    write_manifest(manifest.loc[accepted_rows.index], paths.accepted)
    _write_reports(config, summary, quarantine)
    _print_table(summary, settings.max_listed)
    if blocking:
        raise DataValidationError(_failure_message(blocking, config))
    if current is not None:
        paths.validation_reference.write_text(json.dumps(current, indent=2) + "\n", encoding="utf-8")
    return summary


def _failure_message(blocking: list[Failure], config: Config) -> str:
    """Name every offending file, and every dataset-level check with what it found."""
    row_checks = {c.name for c in checks(config) if c.frame == "rows"}
    files = sorted({f.file for f in blocking if f.check in row_checks})
    dataset: dict[str, list[str]] = {}
    for f in blocking:
        if f.check not in row_checks:
            dataset.setdefault(f.check, []).append(f.file if f.file != "(dataset)" else f.value)
    parts = [f"{len(files)} file(s): {', '.join(files)}"] if files else []
    parts += [f"{check} failed for {', '.join(items)}" for check, items in dataset.items()]
    where = f"see {config.paths.validation_report} and {config.paths.data_docs / 'index.html'}"
    return f"data validation failed: {'; '.join(parts)}; {where}"


def _read_reference(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
