"""The ``visionflow`` command: one thin command per stage; each loads params.yaml once and calls the stage.

Errors: the project's expected errors (:class:`~visionflow.errors.VisionflowError`) are one line, ``error:
<command>: <message>``, and the error's own exit status; anything else is a crash, shown with its traceback, exit
:data:`~visionflow.errors.CRASH`, which the flows retry. :data:`~visionflow.errors.EXIT_CODES` lists them all.
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from visionflow.config import Config, load_config
from visionflow.errors import CRASH, InputError, VisionflowError
from visionflow.stages import STAGES

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Reproducible segmentation and classification pipelines: DVC stages, MLflow tracking, Prefect flows.",
)

ParamsOption = Annotated[Path, typer.Option("--params", "-p", help="params file to read")]


def _guarded(name: str, action: Callable[[], Any]) -> Any:
    """Run ``action``: an expected error is one line and its exit status; a crash is its traceback and CRASH."""
    try:
        return action()
    except VisionflowError as exc:
        typer.echo(f"error: {name}: {exc}", err=True)
        raise typer.Exit(code=exc.exit_code) from None
    except (typer.Exit, KeyboardInterrupt):
        raise
    except Exception as exc:
        traceback.print_exc()
        typer.echo(f"crash: {name}: {type(exc).__name__}: {exc} (an unexpected error, exit {CRASH})", err=True)
        raise typer.Exit(code=CRASH) from None


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


def plan_command(
    params: ParamsOption = Path("params.yaml"),
    explain: Annotated[bool, typer.Option("--explain", help="print plan.json and its reasons; plan nothing")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="exit 9 when plan.json was planned on another kind of machine")
    ] = False,
    speed: Annotated[
        float,
        typer.Option("--speed", min=0.01, help="plan as for a machine this many times as fast; writes no plan"),
    ] = 1.0,
) -> None:
    """Plan the train settings left at auto (input size and policy, batch, lr, epochs) for plan.budget_minutes.

    With --explain, print plan.json's decisions, each with its reason, without planning again. With --check, say
    whether plan.json still holds on this machine (DVC cannot see a move from CPU to GPU; the flows and
    `python3 dev.py repro` plan again when it does not; with plain DVC, `dvc repro -f -s plan`). With --speed 0.33,
    print the plan for a machine a third as fast as this one (this machine's measurements scaled), writing nothing.
    """
    if speed != 1 and (explain or check):
        typer.echo("error: plan: --speed plans a what-if; it goes without --explain and --check", err=True)
        raise typer.Exit(code=2)
    if not explain and not check:
        _run_stage("plan", params, speed=speed)
        return
    config = _guarded("plan", lambda: load_config(params))
    if check:
        from visionflow.errors import STALE_PLAN
        from visionflow.stages.plan import stale

        why = _guarded("plan", lambda: stale(config))
        if why:
            typer.echo(f"plan: {why}: plan again (`dvc repro -f -s plan`)")
            raise typer.Exit(code=STALE_PLAN)
        held = config.paths.plan_file.is_file()
        typer.echo(f"plan: {config.paths.plan_file} " + ("holds on this machine" if held else "not made yet"))
        return
    from visionflow.handoffs import PlanFile

    typer.echo(_guarded("plan", lambda: PlanFile.read(config.paths)).report())


for _name, _doc in STAGES.items():
    if _name == "train":
        app.command(name="train")(train_command)
    elif _name == "plan":
        app.command(name="plan")(plan_command)
    else:
        _register_stage(_name, _doc)


@app.command("init")
def init_command(
    root: Annotated[Path, typer.Argument(help="the dataset folder")],
    params: ParamsOption = Path("params.yaml"),
    write: Annotated[
        bool, typer.Option("--write", help="write the data section into params (else only show it)")
    ] = False,
) -> None:
    """Look at a dataset folder and say how to read it: the data section of params and a registered name.

    Prints what it found, with counts, and what it could not decide; writes params only with --write.
    """
    from visionflow.data import survey as surveying

    found = _guarded("init", lambda: surveying.survey(root))
    if found.data:  # the root as seen from the project (params.yaml's folder), where the stages run
        found.data["root"] = os.path.relpath(root.resolve(), params.resolve().parent)
    typer.echo(found.report())
    if not found.data:
        typer.echo("error: init: nothing to write: see what was not decided", err=True)
        raise typer.Exit(code=InputError.exit_code)
    from visionflow.config import DataConfig, registered_name

    name = registered_name(_guarded("init", lambda: DataConfig.model_validate(found.data)), found.task)
    current = params.read_text(encoding="utf-8") if params.is_file() else ""
    text = surveying.params_text(current, found, name)
    if not write:
        section = text[text.index("# data: written by") :].split("\n\n")[0]
        typer.echo(f"\n{section}\n(and register.model_name: {name})")
        typer.echo(f"init: {params} not changed; --write writes this data section into it")
        return
    params.write_text(text, encoding="utf-8")
    _guarded("init", lambda: load_config(params))  # what was written reads back
    typer.echo(f"init: wrote the data section and register.model_name {name} into {params}; next: `dvc repro`")


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
    """Run the promotion gate for VERSION against the champion on register.gate_split (test where the data has
    one, else val); --force skips it."""
    from visionflow import registry, tracking

    config = _guarded("promote", lambda: load_config(params))
    _guarded("promote", lambda: tracking.ensure_reachable(config))
    decision = _guarded("promote", lambda: registry.gate_and_alias(config, version, force=force))
    typer.echo("promote: " + "\n".join(decision.report()))
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


MODEL_HELP = "models:/NAME@champion, models:/NAME/3, runs:/..., a logged model's folder, or a model.pt from train"


@app.command("predict")
def predict_command(
    model: Annotated[str, typer.Option("--model", help=MODEL_HELP)],
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
    predictor = _guarded("predict", lambda: _predictor(config, model))
    result = _guarded("predict", lambda: predict_folder(predictor, input_dir, output_dir, batch_size, streams))
    failed = f", {result.failed} unreadable (see errors.csv)" if result.failed else ""
    typer.echo(f"predict: {result.images} images -> {result.output}{failed}")


def _predictor(config: Config, model: str) -> Any:
    """The predictor of a logged model (an MLflow URI or folder), or of a ``model.pt`` file that train wrote."""
    from visionflow import tracking

    path = Path(model)
    if not path.is_file():
        return tracking.load_predictor(config, model)
    from visionflow.serving import Predictor

    try:
        return Predictor.from_file(path)
    except (RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as exc:
        raise InputError(f"{path}: not a model.pt written by `visionflow train` ({type(exc).__name__})") from None


def main() -> None:
    app(prog_name="visionflow")


if __name__ == "__main__":
    sys.exit(main())
