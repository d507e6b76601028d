"""The ``visionflow`` command: one thin command per stage; each loads params.yaml once and calls the stage."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from visionflow.config import Config, ConfigError, load_config
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


def _guarded(name: str, action: Callable[[], Any]) -> Any:
    """Run ``action``; a user error (bad params, missing file, unreachable server) is one line and an exit code:
    1 in general, or the error's own ``exit_code`` (4 bad data, 75 tracking server away: worth a retry)."""
    try:
        return action()
    except _USER_ERRORS as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        typer.echo(f"error: {name}: {message}", err=True)
        raise typer.Exit(code=getattr(exc, "exit_code", 1)) from None


def _run_stage(name: str, params: Path, **options: Any) -> Any:
    stage: Callable[..., Any] = importlib.import_module(f"visionflow.stages.{name}").run
    return _guarded(name, lambda: stage(load_config(params), **options))


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


@app.command("models")
def models_command(params: ParamsOption = Path("params.yaml")) -> None:
    """List the registered versions: aliases, headline metric, commit, gate decision."""
    from visionflow import registry, tracking

    config = _guarded("models", lambda: load_config(params))
    _guarded("models", lambda: tracking.ensure_reachable(config))
    rows = _guarded("models", lambda: registry.versions_table(config))
    if not rows:
        typer.echo(f"{config.model_name}: no versions registered yet (run `dvc repro`)")
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    typer.echo(f"{config.model_name} ({tracking.tracking_uri(config)})")
    typer.echo("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        typer.echo("  ".join(str(row[c]).ljust(widths[c]) for c in columns))


@app.command("promote")
def promote_command(
    version: Annotated[str, typer.Argument(help="model version to make champion")],
    force: Annotated[bool, typer.Option("--force", help="skip the gate (the decision records it)")] = False,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Run the promotion gate for VERSION against the champion on the current val split; --force skips it."""
    from visionflow import registry, tracking
    from visionflow.stages.register import report

    config = _guarded("promote", lambda: load_config(params))
    _guarded("promote", lambda: tracking.ensure_reachable(config))
    decision = _guarded("promote", lambda: registry.gate_and_alias(config, version, force=force))
    report(decision)
    if not decision.promoted and decision.alias != "champion":
        raise typer.Exit(code=3)  # not promoted: scripts can tell


@app.command("rollback")
def rollback_command(params: ParamsOption = Path("params.yaml")) -> None:
    """Make the previous champion the champion again."""
    from visionflow import registry, tracking

    config = _guarded("rollback", lambda: load_config(params))
    _guarded("rollback", lambda: tracking.ensure_reachable(config))
    demoted, restored = _guarded("rollback", lambda: registry.rollback(config))
    typer.echo(f"rollback: {config.model_name} @champion v{demoted} -> v{restored}")


@app.command("predict")
def predict_command(
    model: Annotated[str, typer.Option("--model", help="models:/NAME@champion, models:/NAME/3, runs:/..., a path")],
    input_dir: Annotated[Path, typer.Option("--input", help="folder of images")],
    output_dir: Annotated[Path, typer.Option("--output", help="where masks + overlays or predictions.csv go")],
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    streams: Annotated[
        int | None, typer.Option("--streams", help="batches in flight at once (default: a CPU core each, up to 4)")
    ] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Run a logged model over a folder: masks (PNG of class ids) plus overlays, or a CSV of labels."""
    from visionflow import tracking
    from visionflow.predict import predict_folder

    # outside a project (no params.yaml) the defaults do: predict works anywhere MLflow is reachable
    config = _guarded("predict", lambda: load_config(params)) if params.is_file() else Config()
    if model.startswith("models:/"):
        _guarded("predict", lambda: tracking.ensure_reachable(config))
    predictor = _guarded("predict", lambda: tracking.load_predictor(config, model))
    result = _guarded("predict", lambda: predict_folder(predictor, input_dir, output_dir, batch_size, streams))
    failed = f", {result.failed} unreadable (see errors.csv)" if result.failed else ""
    typer.echo(f"predict: {result.images} images -> {result.output}{failed}")


def main() -> None:
    app(prog_name="visionflow")


if __name__ == "__main__":
    sys.exit(main())
