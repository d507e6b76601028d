"""Scheduled retraining: retrain when the source data (or the pipeline) changed since dvc.lock, else skip.

One run: hold the workspace (a second run waits or skips) -> `dvc status` against dvc.lock (nothing changed:
skip, and say so) -> prepare + validate (bad data stops the run and names the files; never retried) -> drift
report -> balance, train, evaluate -> register, where the promotion gate promotes the model or keeps it as
challenger -> optionally commit dvc.lock and `dvc push` -> a markdown artifact ``retrain-summary``.

    python pipelines/retrain.py                          # one run now (Prefect's ephemeral API unless
                                                         # PREFECT_API_URL names a server)
    python pipelines/retrain.py --force                  # retrain even when nothing changed
    python pipelines/retrain.py --commit --push          # then commit dvc.lock and `dvc push` the outputs
    python pipelines/retrain.py serve --cron "0 3 * * *" # a deployment on a schedule, served by this process
    prefect deployment run visionflow-retrain/scheduled  # trigger the served deployment now

`prefect.yaml` declares the same flow for work-pool deployments (`prefect deploy --all`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from visionflow.config import Config
from visionflow.flows import hold_workspace, prefect_defaults, publish, read_params, run_stages, skip_busy
from visionflow.handoffs import GateDecision, ValidationSummary
from visionflow.orchestration import (
    Changes,
    Summary,
    commit_lock,
    dvc_pull,
    dvc_push,
    dvc_remotes,
    pipeline_changes,
)
from visionflow.stages import STAGE_NAMES

__all__ = ["retrain"]

REPO = Path(__file__).resolve().parents[1]
ARTIFACT = "retrain-summary"
DEPLOYMENT = "scheduled"


@task(cache_policy=NO_CACHE)
def check_changes(repo: Path, config: Config) -> Changes:
    """`dvc status`: the stale stages against dvc.lock, and whether the source data is among the changes."""
    changes = pipeline_changes(repo, config)
    get_run_logger().info("changes since dvc.lock: %s", changes.describe())
    return changes


@task(cache_policy=NO_CACHE)
def drift_report(repo: Path, config: Config) -> None:
    """The drift the validate stage measured against the last accepted data, as warnings in the log (the summary
    lists it too; `validate.severity: {drift: error}` makes validation fail on it instead)."""
    logger = get_run_logger()
    summary = ValidationSummary.load_or_none(repo / ValidationSummary.path(config.paths))
    for d in summary.drifting if summary else []:
        logger.warning("drift: %s changed %+.4f (threshold %s)", d.statistic, d.change, d.threshold)


@task(cache_policy=NO_CACHE)
def pull_outputs(repo: Path, config: Config) -> str:
    """A fresh clone or a new worker has dvc.lock but not its outputs: fetch them before deciding anything."""
    try:
        pulled = dvc_pull(repo, config.orchestration.remote)
        note = f"outputs were missing here; pulled them from the DVC remote ({pulled})"
    except RuntimeError as exc:
        note = f"outputs are missing here and `dvc pull` could not fetch them ({exc}); retraining instead"
    get_run_logger().info(note)
    return note


@task(cache_policy=NO_CACHE)
def publish_data(repo: Path, config: Config, commit: bool, push: bool, message: str) -> list[str]:
    """Push the outputs to the DVC remote, then commit dvc.lock (a commit never names outputs the remote lacks)."""
    notes = []
    if push:
        notes.append(f"dvc push: {dvc_push(repo, config.orchestration.remote)}")
    if commit:
        revision = commit_lock(repo, message)
        notes.append(f"committed dvc.lock as {revision}" if revision else "dvc.lock unchanged: nothing to commit")
    for note in notes:
        get_run_logger().info(note)
    return notes


@flow(name="visionflow-retrain", log_prints=True)
def retrain(repo: str = str(REPO), force: bool = False, commit: bool | None = None,
            push: bool | None = None) -> dict[str, Any] | State:  # fmt: skip
    """Retrain when something changed since dvc.lock (``force``: regardless); ``commit`` / ``push`` default to
    ``orchestration``."""
    workspace = Path(repo).resolve()
    config = read_params(workspace)
    if not isinstance(config, Config):
        return config  # params.yaml is invalid: the flow run fails with its one-line error
    settings = config.orchestration
    summary = Summary("visionflow retraining", "running")
    with hold_workspace(workspace, config) as held:
        if not held:
            return skip_busy(workspace, summary, ARTIFACT, config)
        retried = check_changes.with_options(retries=settings.retries, retry_delay_seconds=settings.retry_delay_seconds)
        changes = retried(workspace, config)  # `dvc status` may meet DVC's lock for a moment
        if changes.outputs_missing_only and dvc_remotes(workspace):
            summary.notes.append(pull_outputs(workspace, config))
            changes = retried(workspace, config)
        summary.notes.append(f"changes since dvc.lock: {changes.describe()}")
        if changes.nothing and not force:
            summary.outcome = "skipped: nothing changed since dvc.lock (same source data hash); no retraining"
            get_run_logger().info(summary.outcome)
            publish(workspace, summary, ARTIFACT, config)
            return {"outcome": "skipped", "reason": "unchanged"}
        split = STAGE_NAMES.index("validate") + 1
        data_stages, model_stages = STAGE_NAMES[:split], STAGE_NAMES[split:]
        run_stages(data_stages, workspace, config, summary, ARTIFACT)
        drift_report(workspace, config)
        forced = model_stages[model_stages.index("train") :] if force else ()  # train, evaluate, register anyway
        run_stages(model_stages, workspace, config, summary, ARTIFACT, force=forced)
        registered = summary.stages[-1].ran
        decision = GateDecision.load(workspace / GateDecision.path(config.paths)) if registered else None
        if decision is None:
            outcome, summary.outcome = "up to date", "completed: the model was up to date (register did not run)"
        elif decision.promoted:
            outcome = "promoted"
            summary.outcome = f"promoted: {decision.model_name} v{decision.version} is the new champion"
        else:
            outcome = "kept"
            summary.outcome = f"kept: {decision.model_name} v{decision.version} is {decision.alias}; the champion stays"
        commit = settings.commit if commit is None else commit
        push = settings.push if push is None else push
        try:
            summary.notes += publish_data(workspace, config, commit, push, f"retrain: {summary.outcome}")
        except RuntimeError as exc:  # the model is registered either way: say so, and what did not happen
            summary.outcome += f"; but publishing failed: {exc}"
            publish(workspace, summary, ARTIFACT, config)
            raise
        publish(workspace, summary, ARTIFACT, config)
    return {
        "outcome": outcome,
        "version": decision.version if decision else None,
        "alias": decision.alias if decision else None,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", choices=["run", "serve"], default="run")
    parser.add_argument("--repo", default=os.environ.get("VISIONFLOW_REPO", str(REPO)), help="the workspace")
    parser.add_argument("--force", action="store_true", help="run: retrain even when nothing changed")
    toggle = argparse.BooleanOptionalAction
    parser.add_argument("--commit", action=toggle, help="git-commit dvc.lock afterwards (default: params)")
    parser.add_argument("--push", action=toggle, help="`dvc push` afterwards (default: params)")
    parser.add_argument("--cron", help='serve: schedule, e.g. "0 3 * * *" (03:00 every day)')
    parser.add_argument("--interval", type=float, help="serve: schedule every N seconds instead of a cron")
    parser.add_argument("--name", default=DEPLOYMENT, help="serve: deployment name")
    args = parser.parse_args(argv)
    if args.command == "serve":
        schedule: dict[str, Any] = {"cron": args.cron} if args.cron else {}
        if args.interval:
            schedule = {"interval": args.interval}
        retrain.serve(name=args.name, parameters={"repo": str(Path(args.repo).resolve())}, **schedule)
        return 0
    state = retrain(repo=args.repo, force=args.force, commit=args.commit, push=args.push, return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    with prefect_defaults():
        sys.exit(main(sys.argv[1:]))
