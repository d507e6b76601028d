"""The training pipeline as a Prefect flow: one task per DVC stage, each running ``dvc repro --single-item``.

DVC still decides what is stale (an unchanged stage is skipped in a second); Prefect adds the run history, logs,
retries and the summary artifact:

- a stage that fails for a reason a retry can help (tracking server away, DVC lock busy, a killed process) is
  retried ``orchestration.retries`` times, ``orchestration.retry_delay_seconds`` apart; bad data and bad params
  are never retried;
- one run per workspace: a second run waits for the first (or skips, ``orchestration.overlap: skip``);
- the run ends with a markdown artifact ``training-summary``: stages, validation, val metrics, the promotion
  gate's decision and the MLflow run.

    python pipelines/training.py            # on Prefect's ephemeral API (no server needed)
    PREFECT_API_URL=http://host:4200/api python pipelines/training.py   # against a Prefect server
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from prefect import flow
from prefect.states import State

from visionflow.config import Config
from visionflow.flows import hold_workspace, prefect_defaults, publish, read_params, run_stages, skip_busy
from visionflow.orchestration import Summary
from visionflow.stages import STAGE_NAMES

__all__ = ["training_pipeline"]

REPO = Path(__file__).resolve().parents[1]
ARTIFACT = "training-summary"


@flow(name="visionflow-training", log_prints=True)
def training_pipeline(repo: str = str(REPO), stages: list[str] | None = None) -> dict[str, object] | State:
    """Run the DVC stages in pipeline order; the first failure stops the flow (after its summary is published)."""
    workspace = Path(repo).resolve()
    config = read_params(workspace)
    if not isinstance(config, Config):
        return config  # params.yaml is invalid: the flow run fails with its one-line error
    summary = Summary("visionflow training", "running")
    with hold_workspace(workspace, config) as held:
        if not held:
            return skip_busy(workspace, summary, ARTIFACT, config)
        run_stages(stages or list(STAGE_NAMES), workspace, config, summary, ARTIFACT)
        ran = [s.stage for s in summary.stages if s.ran]
        summary.outcome = f"completed: ran {', '.join(ran)}" if ran else "completed: everything was up to date"
        publish(workspace, summary, ARTIFACT, config)
    return {"outcome": "completed", "ran": ran}


if __name__ == "__main__":
    with prefect_defaults():
        state = training_pipeline(repo=os.environ.get("VISIONFLOW_REPO", str(REPO)), return_state=True)
    sys.exit(0 if state.is_completed() else 1)
