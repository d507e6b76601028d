"""validate: Great Expectations checkpoints over the manifest, with nothing lost.

Row checks judge each image/mask pair; failing pairs with severity ``error`` stop the pipeline
(``validate.on_error: fail``) or are set aside with their reasons (``quarantine``). Dataset checks (splits,
classes in train, class shares) and drift against the last accepted dataset run on the accepted rows.
Every input ends up accepted or quarantined, and the reports say so: a JSON summary, a markdown report,
a console table, the quarantine list and GX Data Docs. Later stages read only the accepted rows.

The parts live in :mod:`visionflow.validation`; this module is the order they run in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from visionflow.config import Config, PathsConfig
from visionflow.errors import DataError, DataValidationError
from visionflow.handoffs import AcceptedManifest, CheckOutcome, DatasetInfo, Failure, Manifest, ValidationSummary
from visionflow.validation import report
from visionflow.validation.checks import Check, Frame, checks, judge, quarantine_table
from visionflow.validation.expectations import DataDocsSuites
from visionflow.validation.features import (
    as_loaded,
    class_table,
    dataset_statistics,
    drift_rows,
    drift_table,
    row_features,
    split_table,
)

__all__ = ["run"]


def run(config: Config) -> ValidationSummary:
    """Judge the manifest, set failing files aside, write the accepted manifest and every report; raise
    :class:`~visionflow.errors.DataValidationError` when an error-severity failure is left (any, under
    ``on_error: fail``; one of the dataset checks, under ``quarantine``)."""
    paths, settings = config.paths, config.validate_
    manifest, info = Manifest.read(paths), DatasetInfo.read(paths)
    findings = _Findings(checks(config), DataDocsSuites(paths.data_docs))

    upright = settings.exif_orientation == "apply"
    rows = row_features(manifest.rows, len(info.classes), settings.near_duplicate_distance, upright)
    quarantine = quarantine_table(rows, findings.judge("rows", rows))
    accepted = rows[~rows["file"].isin(quarantine["file"])]

    findings.judge("splits", split_table(accepted, settings.required_splits))
    findings.judge("classes", class_table(accepted, info.classes))
    reference = _read_reference(paths.validation_reference)
    current = dataset_statistics(accepted, info.classes) if len(accepted) else None
    drift = drift_table(current, reference, settings.drift.model_dump())
    findings.judge("drift", drift)

    blocking = _blocking(findings.failures, quarantine, settings.on_error)
    summary = ValidationSummary(
        success=not blocking,
        mode=settings.on_error,
        inputs=len(rows),
        accepted=len(accepted),
        quarantined=len(quarantine),
        checks=tuple(findings.outcomes),
        failures=tuple(findings.failures),
        drift=drift_rows(drift),
        reference="none yet" if reference is None else f"{reference['images']} images",
        data_docs=_docs_index(paths).as_posix(),
    )
    AcceptedManifest(as_loaded(accepted[manifest.rows.columns], upright)).write(paths)
    _write_reports(config, summary, quarantine)
    print(report.console(summary, settings.max_listed), end="")
    if blocking:
        where = (paths.validation_report, _docs_index(paths))
        raise DataValidationError(report.failure_message(blocking, findings.checks, *where))
    if current is not None:
        paths.validation_reference.write_text(json.dumps(current, indent=2) + "\n", encoding="utf-8")
    return summary


@dataclass
class _Findings:
    """Every check's outcome and failure so far, in the order the frames were judged."""

    checks: list[Check]
    suites: DataDocsSuites
    outcomes: list[CheckOutcome] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def judge(self, frame: Frame, table: pd.DataFrame) -> list[Failure]:
        """Run the checks of ``frame`` on ``table`` (one checkpoint); returns its failures, and records them."""
        found: list[Failure] = []
        for verdict in self.suites.run(frame, table, [c for c in self.checks if c.frame == frame]):
            outcome, failures = judge(verdict, table)
            self.outcomes.append(outcome)
            found += failures
        self.failures += found
        return found


def _blocking(failures: list[Failure], quarantine: pd.DataFrame, mode: str) -> list[Failure]:
    """The error-severity failures that stop the stage: all of them, or under quarantine those not set aside."""
    errors = [f for f in failures if f.severity == "error"]
    if mode == "fail":
        return errors
    set_aside = set(quarantine["file"])
    return [f for f in errors if f.file not in set_aside]


def _docs_index(paths: PathsConfig) -> Path:
    return paths.data_docs / "index.html"


def _write_reports(config: Config, summary: ValidationSummary, quarantine: pd.DataFrame) -> None:
    """quarantine.csv, summary.json, report.md and report.html (the Data Docs are written by the checkpoints)."""
    paths = config.paths
    paths.validation.mkdir(parents=True, exist_ok=True)
    quarantine.to_csv(paths.quarantine, index=False)
    summary.write(paths)
    paths.validation_report.write_text(report.markdown(summary, config.validate_.max_listed), encoding="utf-8")
    paths.validation_page.write_text(report.html(summary, config.validate_.max_listed), encoding="utf-8")


def _read_reference(path: Path) -> dict[str, Any] | None:
    """The statistics of the last accepted data (drift is measured against them); None on the first run."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(
            f"{path}: the drift reference is not valid JSON ({exc}); delete it and the next validate starts afresh"
        ) from None
