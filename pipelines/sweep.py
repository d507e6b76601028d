"""Sweeps as DVC experiments: a grid from a small YAML, queued with ``dvc exp run --queue -S key=value``, run by
DVC's queue, each logged to MLflow (its run tagged ``dvc_experiment`` and ``sweep``) and listed by ``dvc exp
show``; the best can be applied to the workspace and registered, through the promotion gate like any model.

    python pipelines/sweep.py examples/sweep.yaml                # queue and run the grid, report the best
    python pipelines/sweep.py examples/sweep.yaml --apply-best   # then `dvc exp apply` it and register it
    dvc exp show --only-changed                                  # the grid as DVC sees it

Queued experiments run in temporary copies of the workspace (``.dvc/tmp/exps/``); the embedded MLflow store is
still the workspace's (tracking resolves it there), and a tracking server is shared anyway.
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
from visionflow.orchestration import (
    Summary,
    SweepPlan,
    apply_experiment,
    queue_sweep,
    run_queue,
    sweep_results,
)
from visionflow.stages import STAGE_NAMES

__all__ = ["sweep"]

REPO = Path(__file__).resolve().parents[1]
ARTIFACT = "sweep-summary"


@task(cache_policy=NO_CACHE)
def queue(repo: Path, plan: SweepPlan) -> list[str]:
    return queue_sweep(repo, plan, get_run_logger().info)


@task(cache_policy=NO_CACHE)
def run_all(repo: Path, plan: SweepPlan, jobs: int) -> None:
    """DVC runs the queue (``--jobs`` experiments at once); each run's MLflow run is tagged with the sweep."""
    logger = get_run_logger()
    if run_queue(repo, jobs, dict(os.environ, VISIONFLOW_SWEEP=plan.name), logger.info) != 0:
        logger.warning("an experiment failed; the others ran (`dvc queue logs <name>` has its output)")


@task(cache_policy=NO_CACHE)
def results(repo: Path, plan: SweepPlan, names: list[str], config: Config) -> tuple[list[dict[str, Any]], str]:
    metric = plan.metric or f"val.{config.primary_metric}"
    rows = sweep_results(repo, plan, names, metric, config.paths.headline.as_posix())
    return rows, metric


def _table(rows: list[dict[str, Any]], metric: str) -> list[str]:
    def cell(key: str, value: Any) -> str:
        if key != metric:
            return str(value)
        return "failed" if value is None else f"{value:.4f}"

    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return lines + ["| " + " | ".join(cell(k, row[k]) for k in keys) + " |" for row in rows]


@flow(name="visionflow-sweep", log_prints=True)
def sweep(plan_file: str, repo: str = str(REPO), apply_best: bool = False, jobs: int = 1) -> dict[str, Any] | State:
    """Queue and run the grid, report every experiment's metric; optionally apply and register the best."""
    workspace = Path(repo).resolve()
    config = read_params(workspace)
    if not isinstance(config, Config):
        return config  # params.yaml is invalid: the flow run fails with its one-line error
    plan = SweepPlan.read(Path(plan_file))
    summary = Summary(f"visionflow sweep '{plan.name}'", "running")
    with hold_workspace(workspace, config) as held:
        if not held:
            return skip_busy(workspace, summary, ARTIFACT, config)
        names = queue(workspace, plan)
        run_all(workspace, plan, jobs)
        rows, metric = results(workspace, plan, names, config)
        finished = [row for row in rows if row[metric] is not None]
        summary.sections.append("## Experiments\n\n" + "\n".join(_table(rows, metric)))
        if not finished:
            summary.outcome = f"failed: none of the {len(rows)} experiments finished (see `dvc queue logs <name>`)"
            publish(workspace, summary, ARTIFACT, config)
            raise RuntimeError(summary.outcome)
        best = max(finished, key=lambda row: row[metric])
        summary.outcome = (
            f"best: {best['experiment']} with {metric} {best[metric]:.4f} ({len(finished)}/{len(rows)} ran)"
        )
        if apply_best:
            apply_experiment(workspace, best["experiment"])
            get_run_logger().info("applied %s to the workspace; registering it", best["experiment"])
            run_stages(list(STAGE_NAMES), workspace, config, summary, ARTIFACT)
            summary.outcome += "; applied and registered (`git diff params.yaml dvc.lock` shows what changed)"
        publish(workspace, summary, ARTIFACT, config)
    return {"outcome": "completed", "best": best["experiment"], "metric": metric, "results": rows}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("plan", help="sweep YAML (see examples/sweep.yaml)")
    parser.add_argument("--repo", default=os.environ.get("VISIONFLOW_REPO", str(REPO)), help="the workspace")
    parser.add_argument("--apply-best", action="store_true", help="apply the best experiment and register it")
    parser.add_argument("--jobs", type=int, default=1, help="experiments run at once")
    args = parser.parse_args(argv)
    state = sweep(str(Path(args.plan).resolve()), args.repo, args.apply_best, args.jobs, return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    with prefect_defaults():
        sys.exit(main(sys.argv[1:]))
