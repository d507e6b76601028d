"""What validate shows: one set of tables from the summary, rendered for the console, as markdown and as HTML.

:func:`tables` is the one place that decides what the reports hold (each check's result, the failures, the drifting
statistics); :func:`console`, :func:`markdown` and :func:`html` only lay those same rows out.
:func:`failure_message` is the one line a failed run ends with: it names the first few offending files and the
count, the reports list them all.
"""

from __future__ import annotations

import html as _html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from visionflow.handoffs import CheckOutcome, Failure, ValidationSummary
from visionflow.validation.checks import Check

__all__ = ["NAMED_IN_ERROR", "Table", "console", "failure_message", "html", "markdown", "tables"]

NAMED_IN_ERROR = 5  # offending files (classes, statistics) the one-line error names before "and N more"


@dataclass(frozen=True)
class Table:
    """A titled table of text cells, laid out by :func:`console` and :func:`markdown` alike."""

    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""  # a sentence under the title
    more: str = ""  # a line under the rows: what was left out and where it is
    right: tuple[int, ...] = ()  # columns aligned right (counts)
    code: tuple[int, ...] = ()  # columns shown as code in markdown (file names)


def _result(outcome: CheckOutcome) -> str:
    if outcome.success is None:
        return "n/a"
    if outcome.success:
        return "ok"
    return "FAIL" if outcome.severity == "error" else "warn"


def _check_table(summary: ValidationSummary) -> Table:
    rows = tuple((c.check, c.severity, _result(c), str(c.failing)) for c in summary.checks)
    return Table("Checks", ("check", "severity", "result", "failing"), rows, right=(3,))


def _failure_table(summary: ValidationSummary, max_listed: int) -> Table:
    shown = summary.failures[:max_listed]
    rows = tuple((f.file, f.check, f.severity, f.value, f.expected) for f in shown)
    left_out = len(summary.failures) - len(shown)
    more = f"... and {left_out} more in the JSON summary" if left_out else ""
    header = ("file", "check", "severity", "value", "expected")
    return Table(f"Failures: {len(summary.failures)}", header, rows, more=more, code=(0,))


def _drift_table(summary: ValidationSummary) -> Table:
    drifting = summary.drifting
    found = f"{len(drifting)} statistic(s) beyond threshold" if drifting else "within thresholds"
    note = f"Against the last accepted data ({summary.reference}): {found}."
    rows = tuple((d.statistic, f"{d.reference}", f"{d.current}", f"{d.change:+}", f"{d.threshold}") for d in drifting)
    return Table("Drift", ("statistic", "reference", "current", "change", "threshold"), rows, note=note,
                 right=(1, 2, 3, 4))  # fmt: skip


def tables(summary: ValidationSummary, max_listed: int) -> list[Table]:
    """What both reports show: each check's result, the first ``max_listed`` failures, the drifting statistics."""
    found = [_check_table(summary)]
    if summary.failures:
        found.append(_failure_table(summary, max_listed))
    return [*found, _drift_table(summary)]


def _render(tables_: Sequence[Table], layout: Callable[[Table], list[str]]) -> list[str]:
    lines: list[str] = []
    for table in tables_:
        lines += ["", *layout(table)]
    return lines


def _console_table(table: Table) -> list[str]:
    lines = [table.title] + ([f"  {table.note}"] if table.note else [])
    if table.rows:
        widths = [max(len(row[i]) for row in (table.header, *table.rows)) for i in range(len(table.header))]
        for row in (table.header, *table.rows):
            cells = [
                c.rjust(w) if i in table.right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append(("  " + "  ".join(cells)).rstrip())
    return lines + ([f"  {table.more}"] if table.more else [])


def console(summary: ValidationSummary, max_listed: int) -> str:
    """The console report: the accounting line, then :func:`tables` as aligned columns."""
    first = f"validate: {summary.accounting()} (on_error: {summary.mode})"
    return "\n".join([first, *_render(tables(summary, max_listed), _console_table)]) + "\n"


def _cell(text: str, code: bool) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return f"`{text}`" if code and text else text


def _markdown_table(table: Table) -> list[str]:
    lines = [f"## {table.title}", ""] + ([table.note, ""] if table.note else [])
    if table.rows:
        rule = ["---:" if i in table.right else "---" for i in range(len(table.header))]
        lines += [f"| {' | '.join(table.header)} |", f"|{'|'.join(rule)}|"]
        lines += [f"| {' | '.join(_cell(c, i in table.code) for i, c in enumerate(row))} |" for row in table.rows]
    return lines + (["", f"{table.more}."] if table.more else [])


def markdown(summary: ValidationSummary, max_listed: int) -> str:
    """The markdown report (report.md, shown by the Prefect flow and logged to MLflow): :func:`tables` as tables."""
    status = "passed" if summary.success else "FAILED"
    top = [f"# Data validation {status}", "", f"**{summary.accounting()}** (on_error `{summary.mode}`)"]
    return "\n".join([*top, *_render(tables(summary, max_listed), _markdown_table)]) + "\n"


_STYLE = """body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; } th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f0f0f0; text-align: left; } td.n { text-align: right; } code { font-size: 0.9em; }
.FAIL { background: #f6d3b8; font-weight: bold; } .warn { background: #fbf3c4; } .ok { color: #0b5e8a; }"""


def _html_table(table: Table) -> list[str]:
    lines = [f"<h2>{_html.escape(table.title)}</h2>"] + ([f"<p>{_html.escape(table.note)}</p>"] if table.note else [])
    if table.rows:
        lines += ["<table>", "<tr>" + "".join(f"<th>{_html.escape(h)}</th>" for h in table.header) + "</tr>"]
        for row in table.rows:
            cells = []
            for i, cell in enumerate(row):
                text = f"<code>{_html.escape(cell)}</code>" if i in table.code and cell else _html.escape(cell)
                classes = " ".join(c for c in ("n" if i in table.right else "", cell if cell in
                                                ("FAIL", "warn", "ok") else "") if c)  # fmt: skip
                cells.append(f'<td class="{classes}">{text}</td>' if classes else f"<td>{text}</td>")
            lines.append("<tr>" + "".join(cells) + "</tr>")
        lines.append("</table>")
    return lines + ([f"<p>{_html.escape(table.more)}.</p>"] if table.more else [])


def html(summary: ValidationSummary, max_listed: int) -> str:
    """report.html: :func:`tables` as one self-contained page (no scripts, styles or fonts from elsewhere), so the
    report reads offline and wherever it is copied."""
    status = "passed" if summary.success else "FAILED"
    body = [f"<h1>Data validation {status}</h1>",
            f"<p><strong>{_html.escape(summary.accounting())}</strong> (on_error <code>{summary.mode}</code>)</p>",
            *_render(tables(summary, max_listed), _html_table)]  # fmt: skip
    head = f'<meta charset="utf-8"><title>Data validation {status}</title><style>\n{_STYLE}\n</style>'
    return f"<!DOCTYPE html>\n<html>\n<head>{head}</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"


def _first(items: Sequence[str]) -> str:
    """The first :data:`NAMED_IN_ERROR` items, and how many more there are."""
    named = ", ".join(items[:NAMED_IN_ERROR])
    left = len(items) - NAMED_IN_ERROR
    return f"{named} and {left} more" if left > 0 else named


def failure_message(blocking: Sequence[Failure], checks: Sequence[Check], report: Path, docs: Path) -> str:
    """One line: how many files failed, the first few by name; each failed dataset check with what it failed for;
    where the full lists are."""
    row_checks = {c.name for c in checks if c.frame == "rows"}
    files = sorted({f.file for f in blocking if f.check in row_checks})
    dataset: dict[str, list[str]] = {}
    for f in blocking:
        if f.check not in row_checks:
            dataset.setdefault(f.check, []).append(f.file if f.file != "(dataset)" else f.value)
    parts = [f"{len(files)} file(s) failed ({_first(files)})"] if files else []
    parts += [f"{check} failed for {_first(items)}" for check, items in dataset.items()]
    return f"data validation failed: {'; '.join(parts)}; see {report} and {docs}"
