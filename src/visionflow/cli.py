"""The ``visionflow`` command: one thin command per stage; each loads params.yaml once and calls the stage."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from visionflow.config import ConfigError, load_config
from visionflow.stages import STAGES

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Reproducible segmentation and classification pipelines: DVC stages, MLflow tracking, Prefect flows.",
)

ParamsOption = Annotated[Path, typer.Option("--params", "-p", help="params file to read")]

# Errors that describe bad input or a missing earlier stage: shown as one clear line, no traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    FileNotFoundError,
    ValueError,
    KeyError,
    RuntimeError,
)


def _run_stage(name: str, params: Path, **options: Any) -> Any:
    stage: Callable[..., Any] = importlib.import_module(f"visionflow.stages.{name}").run
    try:
        return stage(load_config(params), **options)
    except _USER_ERRORS as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        typer.echo(f"error: {name}: {message}", err=True)
        raise typer.Exit(code=1) from None


def _register_stage(name: str, doc: str) -> None:
    def command(params: ParamsOption = Path("params.yaml")) -> None:
        _run_stage(name, params)

    command.__doc__ = doc
    app.command(name=name)(command)


def train_command(
    params: ParamsOption = Path("params.yaml"),
    resume: Annotated[bool, typer.Option("--resume", help="continue the unfinished checkpoint; fail if none")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="ignore any checkpoint and start over")] = False,
) -> None:
    """Train the model; continues an unfinished checkpoint of the same params and data.

    Under `torchrun --nproc_per_node N -m visionflow.cli train` it trains with DDP; rank 0 logs and saves.
    """
    if resume and fresh:
        typer.echo("error: train: --resume and --fresh exclude each other", err=True)
        raise typer.Exit(code=2)
    _run_stage("train", params, resume="require" if resume else "never" if fresh else "auto")


for _name, _doc in STAGES.items():
    if _name == "train":
        app.command(name="train")(train_command)
    else:
        _register_stage(_name, _doc)


def main() -> None:
    app(prog_name="visionflow")


if __name__ == "__main__":
    sys.exit(main())
