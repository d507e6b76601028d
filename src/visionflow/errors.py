"""The project's expected errors: each is a mistake in the input (params, data, an earlier stage's output, the
registry) or a service that is away, and carries the exit status the CLI ends with.

The CLI shows these as one line. Anything else is a crash: the CLI prints its traceback and exits with
:data:`CRASH`, which the Prefect flows treat as transient and retry (an out-of-memory, a CUDA fault, a bug that a
second try may not hit). :data:`EXIT_CODES` is the one table of what each status means and whether the flows retry
it; docs/concepts.md shows the same table (a test holds the two together).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CRASH",
    "EXIT_CODES",
    "ConfigError",
    "DataError",
    "DataValidationError",
    "ExitCode",
    "InputError",
    "MissingInput",
    "RegistryError",
    "SourceError",
    "TrackingUnavailable",
    "VisionflowError",
    "retried",
]


@dataclass(frozen=True)
class ExitCode:
    code: int
    name: str
    meaning: str
    retried: bool  # whether the Prefect flows retry a stage that ends with it


EXIT_CODES: tuple[ExitCode, ...] = (
    ExitCode(0, "ok", "the command did what it was asked", False),
    ExitCode(2, "usage", "a command-line option is wrong (Typer's own message)", False),
    ExitCode(3, "not promoted", "`visionflow promote`: the gate kept the version as challenger", False),
    ExitCode(4, "bad data", "the data failed validation or its source cannot be read; the files are named", False),
    ExitCode(5, "bad params", "params.yaml (or an option) is invalid: the key and what is allowed are named", False),
    ExitCode(
        6,
        "missing input",
        "an earlier stage's output is missing or of another schema; the stage to run is named",
        False,
    ),
    ExitCode(7, "bad input", "an input given to a command is unusable (a folder of images, an image)", False),
    ExitCode(8, "registry", "the model registry cannot do what was asked (no previous version, classes differ)", False),
    ExitCode(9, "stale plan", "`visionflow plan --check`: plan.json was planned on another kind of machine", False),
    ExitCode(70, "crash", "an unexpected error: its traceback is printed (out of memory, a CUDA fault, a bug)", True),
    ExitCode(75, "tracking away", "the configured MLflow tracking server does not answer", True),
)
CRASH = 70  # EX_SOFTWARE (sysexits.h)
STALE_PLAN = 9  # `visionflow plan --check`: plan again


def retried(code: int | None) -> bool:
    """Whether a stage that ended with ``code`` is worth retrying: the table's transient codes, a stage killed by a
    signal (negative, or 128 + the signal), and exit 1 (Python died before the CLI could report anything)."""
    if code is None:
        return True
    known = {entry.code: entry.retried for entry in EXIT_CODES}
    if code in known:
        return known[code]
    return code == 1 or code < 0 or 128 < code < 255


class VisionflowError(Exception):
    """An expected error: the message says what is wrong, where, and what to do; no traceback is shown."""

    exit_code = 1

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class ConfigError(VisionflowError, ValueError):
    """params.yaml (or a command-line value) is missing, unreadable, or asks for something that does not exist."""

    exit_code = 5


class DataError(VisionflowError, ValueError):
    """The data cannot be used as it is."""

    exit_code = 4


class SourceError(DataError):
    """The configured source cannot be read (missing folder, unknown layout, two files for one image)."""


class DataValidationError(DataError):
    """The data broke at least one error-severity check; the message names the offending files."""


class MissingInput(VisionflowError, FileNotFoundError):
    """A file an earlier stage writes is missing, or was written under another schema: run that stage."""

    exit_code = 6


class InputError(VisionflowError, ValueError):
    """An input handed to a command directly (``--input`` folder, an image sent to the served model) is unusable."""

    exit_code = 7


class RegistryError(VisionflowError, LookupError):
    """The model registry cannot do what was asked: no version to roll back to, a version of other classes."""

    exit_code = 8


class TrackingUnavailable(VisionflowError, ConnectionError):
    """The configured tracking server does not answer."""

    exit_code = 75  # EX_TEMPFAIL (sysexits.h): a failure worth retrying later
