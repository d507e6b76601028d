"""The Great Expectations adapter: the only module that imports great_expectations.

:func:`expectation` turns a catalogue rule (:mod:`visionflow.validation.checks`) into a GX expectation;
:class:`DataDocsSuites` runs one checkpoint per frame in one ephemeral context, every checkpoint updating the same
Data Docs site, and hands back a :class:`~visionflow.validation.checks.Verdict` per check with the index values of
the offending rows. GX is imported on first use, not with this module: importing the validate stage (the CLI's
help, a test collection) does not pay its import of several seconds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from visionflow.validation.checks import INDEX, Between, Check, InSet, IsNull, PairEqual, Rule, Verdict

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

__all__ = ["SITE", "DataDocsSuites", "expectation"]

SITE = "visionflow"  # the Data Docs site every checkpoint updates


def expectation(check: Check) -> Expectation:
    """The GX expectation of a check's rule, tagged with the check's name (to map results back) and severity."""
    import great_expectations.expectations as gxe

    common: dict[str, Any] = {
        "meta": {"check": check.name, "expected": check.expected},
        "severity": "critical" if check.severity == "error" else "warning",
    }
    return _expectation(gxe, check.rule, common)


def _expectation(gxe: Any, rule: Rule, common: dict[str, Any]) -> Expectation:
    match rule:
        case IsNull(column):
            return gxe.ExpectColumnValuesToBeNull(column=column, **common)
        case InSet(column, values):
            return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(values), **common)
        case Between(column, low, high):
            return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high, **common)
        case PairEqual(first, second):
            return gxe.ExpectColumnPairValuesToBeEqual(
                column_A=first, column_B=second, ignore_row_if="either_value_is_missing", **common
            )
    raise TypeError(f"no Great Expectations expectation for rule {rule!r}")


class DataDocsSuites:
    """One ephemeral GX context whose checkpoints, one per frame, all write into one Data Docs site at ``docs_dir``."""

    def __init__(self, docs_dir: Path) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no usage statistics from a pipeline run
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)  # our table is the output
        store = {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())}
        site = {
            "class_name": "SiteBuilder",
            "store_backend": store,
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
        self.context.add_data_docs_site(site_name=SITE, site_config=site)
        self.source = self.context.data_sources.add_pandas("visionflow")

    def run(self, name: str, frame: pd.DataFrame, checks: list[Check]) -> list[Verdict]:
        """Judge ``frame`` by ``checks`` (all of one frame) in a checkpoint called ``name``, verdicts in the
        order of ``checks``. An empty frame runs nothing, and every check's verdict is "nothing to check"; so is a
        check whose ``needs`` column is empty throughout (no groups configured, no val split)."""
        active = [c for c in checks if c.needs is None or (c.needs in frame and frame[c.needs].notna().any())]
        if frame.empty or not active:
            return [Verdict(check, None) for check in checks]
        index = INDEX[active[0].frame]
        by_name = {check.name: check for check in active}
        outcome = self._checkpoint(name, active, index).run(batch_parameters={"dataframe": frame})
        results = [result for run in outcome.run_results.values() for result in run.results]
        judged = {}
        for result in results:
            check = by_name[result.expectation_config.meta["check"]]
            judged[check.name] = _verdict(check, result, index)
        return [judged.get(check.name, Verdict(check, None)) for check in checks]

    def _checkpoint(self, name: str, checks: list[Check], index: str) -> Any:
        gx = self._gx
        batch = self.source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        suite = self.context.suites.add(gx.ExpectationSuite(name=name))
        for check in checks:
            suite.add_expectation(expectation(check))
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )
        return self.context.checkpoints.add(
            gx.Checkpoint(
                name=name,
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=[SITE])],
                result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [index]},
            )
        )


def _verdict(check: Check, result: Any, index: str) -> Verdict:
    """The offending rows' index values, or what GX observed where it names no rows."""
    if result.success:
        return Verdict(check, True)
    entries = result.result.get("unexpected_index_list")
    if entries is None:
        return Verdict(check, False, observed=result.result.get("observed_value"))
    return Verdict(check, False, offending=tuple(entry[index] for entry in entries))
