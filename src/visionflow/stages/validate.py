"""validate: a Great Expectations checkpoint over the manifest.

Writes a JSON summary (every failing file, per check) and GX Data Docs, prints a short table, and raises
:class:`DataValidationError` naming the offending files when any check fails, so ``dvc repro`` stops there.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from visionflow.config import Config
from visionflow.data.manifest import read_dataset_info, read_manifest

__all__ = ["Check", "DataValidationError", "Failure", "ValidateResult", "checks", "run"]

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no usage statistics from a pipeline run


class DataValidationError(RuntimeError):
    """The data broke at least one check; the message names every offending file."""


@dataclass(frozen=True)
class Check:
    name: str  # short id shown in reports
    expected: str  # what a passing row looks like, in words
    value_columns: tuple[str, ...]  # manifest columns shown as the failing value
    expectation: Any  # a great_expectations Expectation


@dataclass
class Failure:
    file: str
    check: str
    value: str
    expected: str


@dataclass
class ValidateResult:
    success: bool
    inputs: int
    failed_files: int
    checks: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def _prepare_columns(manifest: pd.DataFrame) -> pd.DataFrame:
    """Columns the checks read that the manifest does not store directly."""
    frame = manifest.copy()
    frame["file"] = frame["image_path"].fillna(frame["mask_path"])
    frame["splits_per_id"] = frame.groupby("id")["split"].transform("nunique")
    frame["min_side"] = frame[["width", "height"]].min(axis=1)
    return frame


def checks(config: Config) -> list[Check]:
    """The spine's checks; each row of the manifest is judged by every one of them."""
    import great_expectations.expectations as gxe

    min_side = config.validate_.min_image_size
    missing = "either_value_is_missing"
    return [
        Check(
            "decodes",
            "image and mask decode completely, one channel of class ids in the mask",
            ("error",),
            gxe.ExpectColumnValuesToBeNull(column="error"),
        ),
        Check(
            "mask_width",
            "mask as wide as its image",
            ("width", "mask_width"),
            gxe.ExpectColumnPairValuesToBeEqual(column_A="width", column_B="mask_width", ignore_row_if=missing),
        ),
        Check(
            "mask_height",
            "mask as high as its image",
            ("height", "mask_height"),
            gxe.ExpectColumnPairValuesToBeEqual(column_A="height", column_B="mask_height", ignore_row_if=missing),
        ),
        Check(
            "mask_values",
            "mask values are class ids or the ignore index",
            ("invalid_values",),
            gxe.ExpectColumnValuesToBeBetween(column="px_invalid", min_value=0, max_value=0),
        ),
        Check(
            "min_size",
            f"width and height at least {min_side} px",
            ("width", "height"),
            gxe.ExpectColumnValuesToBeBetween(column="min_side", min_value=min_side),
        ),
        Check(
            "unique_content",
            "no two files with the same content hash",
            ("sha256", "split"),
            gxe.ExpectColumnValuesToBeUnique(column="sha256"),
        ),
        Check(
            "one_split",
            "each image name in one split only",
            ("id", "split"),
            gxe.ExpectColumnValuesToBeBetween(column="splits_per_id", min_value=1, max_value=1),
        ),
        Check(
            "has_train_and_val",
            "train and val splits are not empty",
            ("split",),
            gxe.ExpectColumnDistinctValuesToContainSet(column="split", value_set=["train", "val"]),
        ),
    ]


def _run_checkpoint(frame: pd.DataFrame, suite_checks: list[Check], docs_dir: Path) -> list[Any]:
    """Run one GX checkpoint (building Data Docs into ``docs_dir``); returns the per-expectation results."""
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    context.add_data_docs_site(
        site_name="visionflow",
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir.resolve()),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    asset = context.data_sources.add_pandas("visionflow").add_dataframe_asset("manifest")
    batch = asset.add_batch_definition_whole_dataframe("manifest")
    suite = context.suites.add(gx.ExpectationSuite(name="manifest"))
    for check in suite_checks:
        check.expectation.meta = {"check": check.name, "expected": check.expected}
        suite.add_expectation(check.expectation)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="manifest", data=batch, suite=suite))
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="manifest",
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["visionflow"])],
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["file"]},
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame})
    return [r for run in outcome.run_results.values() for r in run.results]


def _failures(check: Check, result: Any, frame: pd.DataFrame) -> list[Failure]:
    """Turn one expectation result into one row per offending file (or one row for table-level checks)."""
    indices = result.result.get("unexpected_index_list")
    if indices is None:  # a table-level expectation: no rows to blame
        observed = result.result.get("observed_value")
        return [Failure("(dataset)", check.name, f"{observed}", check.expected)]
    by_file = frame.set_index("file", drop=False)
    failures = []
    for entry in indices:
        row = by_file.loc[entry["file"]]
        row = row.iloc[0] if isinstance(row, pd.DataFrame) else row
        value = ", ".join(f"{c}={row[c]}" for c in check.value_columns)
        failures.append(Failure(str(entry["file"]), check.name, value, check.expected))
    return failures


def _print_table(result: ValidateResult, max_listed: int) -> None:
    print(f"validate: {result.inputs} inputs, {result.failed_files} failing files")
    print(f"  {'check':<18} {'status':<6} failing")
    for check in result.checks:
        status = "ok" if check["success"] else "FAIL"
        print(f"  {check['check']:<18} {status:<6} {check['failing']}")
    for failure in result.failures[:max_listed]:
        print(f"  ! {failure.file}: {failure.check}: {failure.value} (expected {failure.expected})")
    if len(result.failures) > max_listed:
        print(f"  ... {len(result.failures) - max_listed} more in the JSON summary")


def run(config: Config) -> ValidateResult:
    paths = config.paths
    manifest = read_manifest(paths.manifest)
    read_dataset_info(paths.dataset_info)  # fails early, naming the file, when prepare did not finish
    frame = _prepare_columns(manifest)
    suite_checks = checks(config)
    results = _run_checkpoint(frame, suite_checks, paths.data_docs)
    by_name = {c.name: c for c in suite_checks}
    summary = ValidateResult(success=all(r.success for r in results), inputs=len(frame), failed_files=0)
    for result in results:
        check = by_name[result.expectation_config.meta["check"]]
        failures = [] if result.success else _failures(check, result, frame)
        summary.checks.append(
            {
                "check": check.name,
                "expected": check.expected,
                "success": bool(result.success),
                "failing": len(failures),
            }
        )
        summary.failures.extend(failures)
    summary.failed_files = len({f.file for f in summary.failures if f.file != "(dataset)"})
    paths.validation_summary.parent.mkdir(parents=True, exist_ok=True)
    payload = asdict(summary) | {"data_docs": (paths.data_docs / "index.html").as_posix()}
    paths.validation_summary.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    _print_table(summary, config.validate_.max_listed)
    if not summary.success:
        files = sorted({f.file for f in summary.failures})
        raise DataValidationError(
            f"data validation failed for {len(files)} file(s): {', '.join(files)}; "
            f"see {paths.validation_summary} and {paths.data_docs / 'index.html'}"
        )
    return summary
