"""The training pipeline as a Prefect flow: one task per DVC stage, each running ``dvc repro --single-item``.

DVC still decides what is stale (an unchanged stage is skipped in a second); Prefect adds the run history,
logs and, in later flows, schedules and retries. The flow stops at the first failing stage and raises with
that stage's own error message.

    python pipelines/training.py            # on Prefect's ephemeral API (no server needed)
    PREFECT_API_URL=http://host:4200/api python pipelines/training.py   # against a Prefect server
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry calls from a closed network

from prefect import flow, get_run_logger, task
from prefect import runtime as prefect_runtime
from prefect.artifacts import create_markdown_artifact

from visionflow.config import load_config
from visionflow.stages import STAGE_NAMES

__all__ = ["StageFailed", "repro_stage", "training_pipeline"]

REPO = Path(__file__).resolve().parents[1]
TAIL_LINES = 25  # lines of a failing stage's output repeated in the exception


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message holds the end of its output."""


def _dvc() -> str:
    beside_python = Path(sys.executable).with_name("dvc")
    return str(beside_python) if beside_python.exists() else (shutil.which("dvc") or "dvc")


@task(task_run_name="dvc repro {stage}")
def repro_stage(stage: str, repo: Path = REPO) -> str:
    """Run one stage through DVC, streaming its output into the Prefect log."""
    logger = get_run_logger()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    flow_run_id = prefect_runtime.flow_run.id
    if flow_run_id:  # lineage: register tags the model version with the flow run that produced it
        env["VISIONFLOW_FLOW_RUN_ID"] = str(flow_run_id)
    command = [_dvc(), "repro", "--single-item", stage]
    logger.info("running %s in %s", " ".join(command), repo)
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    with subprocess.Popen(
        command,
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            for part in line.rstrip("\n").split("\r"):
                if part.strip() and "it/s]" not in part and "batch/s" not in part:
                    tail.append(part)
                    logger.info("%s | %s", stage, part)
    if stage == "validate":
        _publish_validation_report(repo)
    if process.returncode != 0:
        errors = [line for line in tail if line.startswith(("error:", "ERROR"))]
        headline = errors[0] if errors else f"exit code {process.returncode}"
        raise StageFailed(f"stage '{stage}' failed: {headline}\n--- last output ---\n" + "\n".join(tail))
    return stage


def _publish_validation_report(repo: Path) -> None:
    """Show validate's markdown summary as a Prefect artifact (on failure too: that is when it matters)."""
    report = repo / load_config(repo / "params.yaml").paths.validation_report
    if report.is_file():
        create_markdown_artifact(
            markdown=report.read_text(encoding="utf-8"), key="data-validation", description="visionflow data validation"
        )


@flow(name="visionflow-training", log_prints=True)
def training_pipeline(repo: str = str(REPO), stages: list[str] | None = None) -> list[str]:
    """Run the DVC stages in pipeline order; the first failure stops the flow."""
    done = []
    for stage in stages or list(STAGE_NAMES):
        done.append(repro_stage(stage, Path(repo)))
    return done


if __name__ == "__main__":
    training_pipeline(repo=os.environ.get("VISIONFLOW_REPO", str(REPO)))
