"""Prefect building blocks shared by the flows in ``pipelines/``: a DVC stage as a task with retries that know a
transient failure from bad data, one run per workspace, and the markdown artifact that ends every run.

The flows themselves (``pipelines/training.py``, ``retrain.py``, ``sweep.py``) stay short; the logic they call
lives in :mod:`visionflow.orchestration` and runs without Prefect.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry calls from a closed network

from prefect import get_run_logger, task
from prefect import runtime as prefect_runtime
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State

from visionflow.config import Config, load_config
from visionflow.errors import STALE_PLAN, ConfigError
from visionflow.orchestration import (
    StageFailed,
    StageResult,
    Summary,
    run_stage,
    run_summary,
    tool,
    workspace_lock,
)

__all__ = [
    "flow_run_label",
    "hold_workspace",
    "prefect_defaults",
    "publish",
    "read_params",
    "repro_stage",
    "run_stages",
    "skip_busy",
]


def _worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a failed stage only when a retry can help (see :attr:`StageFailed.transient`)."""
    error = state.result(raise_on_failure=False)
    transient = not isinstance(error, StageFailed) or error.transient
    if not transient:
        get_run_logger().error("not retrying %s: %s", task_run.name, error.headline)
    return transient


@task(task_run_name="dvc repro {stage}", cache_policy=NO_CACHE, retry_condition_fn=_worth_retrying)
def repro_stage(stage: str, repo: Path, force: bool = False) -> StageResult:
    """One DVC stage (``force``: even when up to date). Register tags the model version with this flow run."""
    logger = get_run_logger()
    env = dict(os.environ)
    if prefect_runtime.flow_run.id:
        env["VISIONFLOW_FLOW_RUN_ID"] = str(prefect_runtime.flow_run.id)
    try:
        return run_stage(stage, repo, env, logger.info, force)
    finally:
        if stage == "validate":  # the validation report matters most when validation failed
            report = repo / load_config(repo / "params.yaml").paths.validation_report
            if report.is_file():
                create_markdown_artifact(markdown=report.read_text(encoding="utf-8"), key="data-validation",
                                         description="visionflow data validation")  # fmt: skip


EPHEMERAL_STARTUP_SECONDS = 120


def prefect_defaults() -> contextlib.AbstractContextManager[Any]:
    """Prefect settings for a flow run on this machine, where the environment does not set them.

    Prefect waits 20 s for its ephemeral API server; on a busy 2-core machine with a fresh ``PREFECT_HOME`` (its
    database created and migrated first) the start took longer and the flow failed with "Timed out while
    attempting to connect to ephemeral Prefect API server", so the flows wait up to two minutes. Prefect reads its
    settings when it is imported, hence a settings context around the run rather than an environment variable.
    """
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    if "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in os.environ:
        return contextlib.nullcontext()
    return temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: EPHEMERAL_STARTUP_SECONDS})


def read_params(repo: Path) -> Config | State:
    """The workspace's params, or, where params.yaml is invalid, a failed state to end the flow run with at once:
    the one-line error, no stage started, nothing retried (no retry can fix a params file)."""
    try:
        return load_config(repo / "params.yaml")
    except ConfigError as exc:
        message = f"error: params: {exc}"
        get_run_logger().error("%s; no stage was started (a retry cannot fix params.yaml)", message)
        return Failed(message=message)


def flow_run_label() -> str:
    name, run_id = prefect_runtime.flow_run.name, prefect_runtime.flow_run.id
    return f"flow run '{name}' ({run_id})" if run_id else f"process {os.getpid()}"


@contextmanager
def hold_workspace(repo: Path, config: Config) -> Iterator[bool]:
    """:func:`workspace_lock` with this flow run as the holder and the Prefect log as the voice."""
    settings = config.orchestration
    logger = get_run_logger()
    with workspace_lock(repo, settings.overlap, settings.lock_timeout, flow_run_label(), logger.warning) as held:
        yield held


def publish(repo: Path, summary: Summary, key: str, config: Config | None = None) -> str:
    """The run's summary as a Prefect markdown artifact (and in the log); returns the markdown."""
    markdown = run_summary(repo, summary, config)
    create_markdown_artifact(markdown=markdown, key=key, description=summary.title)
    get_run_logger().info("%s", markdown)
    return markdown


def skip_busy(repo: Path, summary: Summary, key: str, config: Config) -> dict[str, Any]:
    """What a flow returns (and publishes) when ``orchestration.overlap: skip`` found the workspace busy."""
    summary.outcome = "skipped: another run holds the workspace (orchestration.overlap: skip)"
    publish(repo, summary, key, config)
    return {"outcome": "skipped", "reason": "workspace busy"}


def _plan_stale(repo: Path) -> str | None:
    """Why ``repo``'s plan.json no longer holds on this machine (``visionflow plan --check``, in its own process:
    the flow holds no torch or CUDA state), or None."""
    checked = subprocess.run([tool("visionflow"), "plan", "--check"], cwd=repo, capture_output=True, text=True)
    return checked.stdout.strip().removeprefix("plan: ") if checked.returncode == STALE_PLAN else None


def run_stages(stages: Iterable[str], repo: Path, config: Config, summary: Summary, key: str,
               force: Iterable[str] = ()) -> None:  # fmt: skip
    """The stages in order (those in ``force`` even when up to date), each retried as ``orchestration`` says; on a
    failure the summary is published with the failing stage's error before the exception ends the flow."""
    settings = config.orchestration
    stage_task = repro_stage.with_options(retries=settings.retries, retry_delay_seconds=settings.retry_delay_seconds)
    forced = set(force)
    for stage in stages:
        if stage == "plan" and stage not in forced and (why := _plan_stale(repo)):
            get_run_logger().info("plan: %s", why)  # DVC cannot see a change of machine: plan is forced
            forced.add(stage)
        try:
            summary.stages.append(stage_task(stage, repo, stage in forced))
        except StageFailed as failure:
            summary.outcome = f"failed at stage '{stage}': {failure.headline}"
            publish(repo, summary, key, config)
            raise
