"""Running the pipeline unattended: one run per workspace, what changed since dvc.lock, stage runs whose failures
say whether a retry can help, and a summary someone can read afterwards.

Plain Python: the Prefect flows in ``pipelines/`` wrap these in tasks (retries, artifacts, schedules), and tests
call them directly.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from visionflow.config import Config, load_config
from visionflow.errors import retried
from visionflow.handoffs import EvaluationMetrics, GateDecision, TrainingRun, ValidationSummary

__all__ = [
    "LOCK_FILE",
    "OWNER_FILE",
    "Changes",
    "StageFailed",
    "StageResult",
    "Summary",
    "SweepPlan",
    "WorkspaceBusy",
    "apply_experiment",
    "commit_lock",
    "dvc",
    "dvc_pull",
    "dvc_push",
    "dvc_remotes",
    "experiment_names",
    "mlflow_link",
    "pipeline_changes",
    "queue_sweep",
    "run_queue",
    "run_stage",
    "run_summary",
    "set_flags",
    "sweep_results",
    "tool",
    "workspace_lock",
]

LOCK_FILE = Path(".dvc/tmp/visionflow-workspace.lock")  # .dvc/tmp: ignored by git, local to this workspace
OWNER_FILE = Path(".dvc/tmp/visionflow-workspace.owner.json")
TAIL_LINES = 25  # lines of a failing stage's output repeated in its exception
DVC_REFUSED = 255  # DVC itself refused (no stage ran: a params interpolation error, a missing stage): not retried
Log = Callable[[str], None]


def tool(name: str) -> str:
    """The command ``name`` beside this interpreter (the project's environment), else the one on PATH."""
    beside_python = Path(sys.executable).with_name(name)
    return str(beside_python) if beside_python.exists() else (shutil.which(name) or name)


def dvc() -> str:
    return tool("dvc")


def _dvc_checked(repo: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    result = subprocess.run([dvc(), *args], cwd=repo, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed in {repo}: {(result.stderr or result.stdout).strip()}")
    return result.stdout


# ---------------------------------------------------------------------------------------------------------------
# one run per workspace


class WorkspaceBusy(RuntimeError):
    """Another run held the workspace for longer than ``orchestration.lock_timeout``."""


def _owner(repo: Path) -> str:
    try:
        owner = json.loads((repo / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "another run (no owner recorded)"
    return f"{owner.get('holder', 'a run')} (pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('since')})"


@contextmanager
def workspace_lock(repo: Path, overlap: str, timeout: float, holder: str, log: Log = print) -> Iterator[bool]:
    """Hold ``repo`` for one run. Yields True once held; False at once when another run holds it and ``overlap`` is
    ``skip``. With ``wait`` it waits up to ``timeout`` seconds, then raises :class:`WorkspaceBusy`.

    A file lock (``.dvc/tmp/visionflow-workspace.lock``): the kernel releases it when its process dies, so a killed
    run never leaves the workspace locked. DVC's own lock makes a second ``dvc repro`` fail outright; this one makes
    a second flow wait its turn (or skip) instead, so dvc.lock is only ever written by one run at a time.
    """
    path = repo / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        owner = _owner(repo)
        if overlap == "skip":
            log(f"workspace {repo} is busy: {owner} holds it; skipping this run (orchestration.overlap: skip)")
            yield False
            return
        log(f"workspace {repo} is busy: {owner} holds it; waiting up to {timeout:.0f} s (orchestration.overlap: wait)")
        start = time.monotonic()
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise WorkspaceBusy(
                f"workspace {repo} still busy after {timeout:.0f} s: {_owner(repo)} holds it "
                "(raise orchestration.lock_timeout, or set orchestration.overlap: skip)"
            ) from None
        log(f"workspace {repo} is free after {time.monotonic() - start:.0f} s; going on")
    try:
        since = datetime.now(UTC).isoformat(timespec="seconds")
        owner = {"holder": holder, "pid": os.getpid(), "host": socket.gethostname(), "since": since}
        (repo / OWNER_FILE).write_text(json.dumps(owner) + "\n", encoding="utf-8")
        yield True
    finally:
        (repo / OWNER_FILE).unlink(missing_ok=True)
        lock.release()


# ---------------------------------------------------------------------------------------------------------------
# what changed since dvc.lock


@dataclass(frozen=True)
class Changes:
    """``dvc status`` of the pipeline: the stale stages with DVC's reasons, and the changed source data."""

    stale: dict[str, list[str]]
    data: list[str]  # the data.root entries DVC found new, modified or deleted against dvc.lock

    @property
    def nothing(self) -> bool:
        return not self.stale

    @property
    def outputs_missing_only(self) -> bool:
        """Only outputs are absent here (a fresh clone, a new worker): nothing a `dvc pull` could not bring back."""
        reasons = [reason for stage in self.stale.values() for reason in stage]
        missing = ("(deleted)", "(not in cache)")
        return bool(reasons) and not self.data and all(reason.endswith(missing) for reason in reasons)

    def describe(self) -> str:
        if self.nothing:
            return "source data, params and code all match dvc.lock"
        data = f"source data changed ({', '.join(self.data)}); " if self.data else "source data unchanged; "
        stages = "; ".join(f"{stage}: {', '.join(reasons)}" for stage, reasons in self.stale.items())
        return data + "stale: " + stages


def _reasons(entries: list[Any]) -> list[str]:
    reasons = []
    for entry in entries:
        if isinstance(entry, str):  # "changed checksum", "always changed"
            reasons.append(entry)
            continue
        for kind, changed in entry.items():  # {"changed deps": {path: "modified", "params.yaml": {...}}}
            items = changed.items() if isinstance(changed, dict) else [(str(changed), "")]
            for path, what in items:
                detail = ", ".join(what) if isinstance(what, dict) else what
                reasons.append(f"{kind.removeprefix('changed ')} {path}" + (f" ({detail})" if detail else ""))
    return reasons


def pipeline_changes(repo: Path, config: Config | None = None) -> Changes:
    """What ``dvc repro`` would rerun, and whether the source data (``data.root``) is among it: DVC hashes the
    data and compares with dvc.lock (its hash cache makes an unchanged folder cheap to check)."""
    config = config or load_config(repo / "params.yaml")
    status = json.loads(_dvc_checked(repo, "status", "--json") or "{}")
    root = (repo / config.data.root).resolve()
    data = []
    for entry in status.get("prepare", []):
        if isinstance(entry, dict):
            for path, what in entry.get("changed deps", {}).items():
                if (repo / path).resolve() == root:
                    data.append(f"{path}: {what}")
    if "prepare" in status and not (repo / "dvc.lock").is_file():
        data.append(f"{config.data.root}: no dvc.lock yet")
    return Changes({stage: _reasons(entries) for stage, entries in status.items()}, data)


# ---------------------------------------------------------------------------------------------------------------
# running stages


@dataclass(frozen=True)
class StageResult:
    stage: str
    ran: bool  # False: DVC found it up to date, or restored its outputs from the run-cache
    seconds: float
    restored: bool = False  # DVC's run-cache had this stage's outputs for these deps and params


class StageFailed(RuntimeError):
    """A stage failed; the message holds its error line and the end of its output.

    ``exit_code`` is the stage command's own status when it ran ("exited with N"), None when DVC's lock was busy,
    else DVC's status (255: DVC itself refused, e.g. a params interpolation error or a missing stage).
    """

    def __init__(self, stage: str, exit_code: int | None, headline: str, tail: list[str]) -> None:
        super().__init__(f"stage '{stage}' failed: {headline}\n--- last output ---\n" + "\n".join(tail))
        self.stage, self.exit_code, self.headline = stage, exit_code, headline

    @property
    def transient(self) -> bool:
        """Worth retrying: the stage's exit status is one the table in :mod:`visionflow.errors` retries (a crash with
        its traceback, an unreachable tracking server), the stage was killed, or DVC's lock was busy (None). Never
        bad data, bad params, a missing input or DVC refusing the pipeline itself (255)."""
        return self.exit_code != DVC_REFUSED and retried(self.exit_code)


def run_stage(stage: str, repo: Path, env: Mapping[str, str] | None = None, log: Log = print,
              force: bool = False) -> StageResult:  # fmt: skip
    """``dvc repro --single-item <stage>`` (``--force``: even when up to date): DVC still decides whether it is
    stale. Output goes to ``log`` line by line (progress bars left out); a failure raises :class:`StageFailed` with
    the stage's own exit status. Interrupting this (Ctrl-C, a cancelled flow run) stops the stage too."""
    command = [dvc(), "repro", "--single-item", *(["--force"] if force else []), stage]
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    first_error, skipped, restored, start = None, False, False, time.monotonic()
    environment = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    with subprocess.Popen(command, cwd=repo, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace") as process:  # fmt: skip
        assert process.stdout is not None
        try:
            for line in process.stdout:
                for part in line.rstrip("\n").split("\r"):
                    if part.strip() and "it/s]" not in part and "batch/s" not in part and "img/s]" not in part:
                        tail.append(part)
                        log(f"{stage} | {part}")
                        first_error = first_error or (part if part.startswith("error:") else None)
                        skipped = skipped or f"Stage '{stage}' didn't change, skipping" in part
                        restored = restored or f"Stage '{stage}' is cached - skipping run" in part
        except BaseException:
            process.terminate()  # never leave a stage writing outputs after its flow has gone
            process.wait(timeout=60)
            raise
    if process.returncode != 0:
        exited = [int(m) for line in tail for m in re.findall(r"exited with (-?\d+)", line)]
        lock_busy = any("Unable to acquire lock" in line for line in tail)
        code = exited[-1] if exited else None if lock_busy else process.returncode
        dvc_error = next((line for line in tail if line.startswith("ERROR")), None)
        raise StageFailed(stage, code, first_error or dvc_error or f"exit {code}", list(tail))
    return StageResult(stage, not (skipped or restored), time.monotonic() - start, restored)


# ---------------------------------------------------------------------------------------------------------------
# sweeps: a grid of DVC experiments


@dataclass(frozen=True)
class SweepPlan:
    """A grid of ``dvc exp run -S`` experiments, read from a small YAML (see ``examples/sweep.yaml``)."""

    name: str  # experiments are named <name>-1, <name>-2, ...
    grid: dict[str, list[Any]]  # every combination of these values is one experiment
    fixed: dict[str, Any] = field(default_factory=dict)  # `set:` overrides shared by every experiment
    stage: str = "evaluate"  # run the pipeline up to here; the chosen one is registered after `dvc exp apply`
    metric: str | None = None  # key in headline.json, e.g. val.miou; null: the task's primary val metric

    @classmethod
    def read(cls, path: Path) -> SweepPlan:
        import yaml

        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"sweep file {path}: {exc}") from None
        if not isinstance(spec, dict):
            raise ValueError(f"sweep file {path}: expected a mapping with `grid:`, got {type(spec).__name__}")
        unknown = set(spec) - {"name", "grid", "set", "stage", "metric"}
        grid = spec.get("grid")
        if unknown or not isinstance(grid, dict) or not grid:
            raise ValueError(
                f"sweep file {path}: needs `grid:` (param -> list of values)"
                + (f"; unknown keys {sorted(unknown)} (allowed: name, grid, set, stage, metric)" if unknown else "")
            )
        grid = {key: values if isinstance(values, list) else [values] for key, values in grid.items()}
        if empty := [key for key, values in grid.items() if not values]:
            raise ValueError(f"sweep file {path}: grid values of {', '.join(empty)} are empty")
        from visionflow.stages import STAGE_NAMES

        stages = [stage for stage in STAGE_NAMES if stage != "register"]
        if spec.get("stage", "evaluate") not in stages:
            raise ValueError(
                f"sweep file {path}: stage '{spec.get('stage')}' must be one of {', '.join(stages)} "
                "(experiments are not registered; `--apply-best` registers the chosen one)"
            )
        name = str(spec.get("name") or path.stem)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"sweep file {path}: name '{name}' must be letters, digits, '-', '_' or '.'")
        return cls(name, grid, spec.get("set") or {}, spec.get("stage", "evaluate"), spec.get("metric"))

    def points(self) -> list[dict[str, Any]]:
        """Every combination of the grid values, each with the fixed overrides (the grid wins on a clash)."""
        import itertools

        keys = list(self.grid)
        return [self.fixed | dict(zip(keys, combo, strict=True)) for combo in itertools.product(*self.grid.values())]


def set_flags(overrides: Mapping[str, Any]) -> list[str]:
    """``-S key=value`` per override, values in YAML flow style as DVC parses them (lists, null, strings)."""
    import yaml

    flags = []
    for key, value in overrides.items():
        text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
        flags += ["-S", f"{key}={text}"]
    return flags


def experiment_names(repo: Path) -> set[str]:
    """Names of the experiments DVC holds for this workspace (all baselines)."""
    names = set()
    for baseline in json.loads(_dvc_checked(repo, "exp", "show", "--json", "-A") or "[]"):
        for experiment in baseline.get("experiments") or []:
            names.add(experiment.get("name"))
    return names - {None}


def queue_sweep(repo: Path, plan: SweepPlan, log: Log = print) -> list[str]:
    """``dvc exp run --queue`` one experiment per grid point; a rerun of the same sweep replaces its old ones."""
    names = [f"{plan.name}-{k}" for k in range(1, len(plan.points()) + 1)]
    stale = sorted(set(names) & experiment_names(repo))
    if stale:
        log(f"replacing earlier experiments of sweep '{plan.name}': {', '.join(stale)}")
        _dvc_checked(repo, "exp", "remove", *stale)
    for name, point in zip(names, plan.points(), strict=True):
        _dvc_checked(repo, "exp", "run", "--queue", "--name", name, *set_flags(point), plan.stage)
        log(f"queued {name}: {', '.join(f'{k}={v}' for k, v in point.items())}")
    return names


def run_queue(repo: Path, jobs: int, env: Mapping[str, str] | None = None, log: Log = print) -> int:
    """Run every queued experiment (``dvc exp run --run-all``) and wait for the queue; DVC's output goes to
    ``log``. Returns DVC's exit status: non-zero when an experiment failed (the others still ran)."""
    result = subprocess.run([dvc(), "exp", "run", "--run-all", "--jobs", str(jobs)], cwd=repo, env=env,
                            capture_output=True, text=True)  # fmt: skip
    for line in (result.stdout + result.stderr).splitlines():
        if line.strip():
            log(f"dvc exp run --run-all | {line}")
    return result.returncode


def _dig(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def sweep_results(repo: Path, plan: SweepPlan, names: list[str], metric: str, metrics_file: str) -> list[dict]:
    """Per experiment: its overrides and ``metric`` (None when it failed), from ``dvc exp show --json``."""
    shown = {}
    for baseline in json.loads(_dvc_checked(repo, "exp", "show", "--json") or "[]"):
        for experiment in baseline.get("experiments") or []:
            data = (experiment.get("revs") or [{}])[0].get("data") or {}
            value = _dig((data.get("metrics") or {}).get(metrics_file, {}).get("data", {}), metric)
            shown[experiment.get("name")] = value
    return [{"experiment": name, **point, metric: shown.get(name)}
            for name, point in zip(names, plan.points(), strict=True)]  # fmt: skip


def apply_experiment(repo: Path, name: str) -> None:
    """``dvc exp apply``: the experiment's params, dvc.lock and outputs into the workspace."""
    _dvc_checked(repo, "exp", "apply", name)


# ---------------------------------------------------------------------------------------------------------------
# after the run


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)


def commit_lock(repo: Path, message: str) -> str | None:
    """Commit dvc.lock (and nothing else) when it changed; returns the new commit, or None when there was nothing."""
    for args in (("status", "--porcelain", "--", "dvc.lock"), ("add", "--", "dvc.lock"),
                 ("commit", "-m", message, "--", "dvc.lock")):  # fmt: skip
        result = _git(repo, *args)
        if result.returncode != 0:
            raise RuntimeError(f"git {args[0]} dvc.lock failed in {repo}: {(result.stderr or result.stdout).strip()}")
        if args[0] == "status" and not result.stdout.strip():
            return None
    return _git(repo, "rev-parse", "--short", "HEAD").stdout.strip()


def dvc_remotes(repo: Path) -> list[str]:
    return [line.split()[0] for line in _dvc_checked(repo, "remote", "list").splitlines() if line.strip()]


def _with_remote(action: str, repo: Path, remote: str | None) -> str:
    try:
        out = _dvc_checked(repo, action, *(["--remote", remote] if remote else []))
    except RuntimeError as exc:
        hint = "configure one with `dvc remote add -d storage <folder or s3://...>`, or set orchestration.remote"
        raise RuntimeError(f"{exc} ({hint})") from None
    lines = out.strip().splitlines()
    return lines[-1] if lines else action


def dvc_push(repo: Path, remote: str | None = None) -> str:
    """``dvc push`` the pipeline's cached outputs to ``remote`` (default: the project's default remote)."""
    return _with_remote("push", repo, remote)


def dvc_pull(repo: Path, remote: str | None = None) -> str:
    """``dvc pull``: the outputs dvc.lock names, from the remote (a fresh clone or worker starts from these)."""
    return _with_remote("pull", repo, remote)


def mlflow_link(run: TrainingRun) -> str:
    """A link to the run in the MLflow UI (tracking server), or how to open it (embedded SQLite store)."""
    uri, experiment, run_id = run.tracking_uri, run.experiment_id, run.run_id
    if uri.startswith(("http://", "https://")):
        return f"[{run_id}]({uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id})"
    return f"`{run_id}` in `{uri}` (open with `mlflow ui --backend-store-uri {uri}`)"


@dataclass
class Summary:
    """What one flow run did, rendered as markdown for a Prefect artifact (and the log)."""

    title: str
    outcome: str
    stages: list[StageResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)  # markdown blocks shown after the notes


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _stage_word(result: StageResult) -> str:
    return "ran" if result.ran else "restored from run-cache" if result.restored else "up to date"


def run_summary(repo: Path, summary: Summary, config: Config | None = None) -> str:
    """Markdown: outcome, stages, data validation and drift, val metrics, the gate's decision, the MLflow run."""
    config = config or load_config(repo / "params.yaml")
    paths = config.paths
    lines = [f"# {summary.title}", "", f"**{summary.outcome}**", ""]
    lines += [f"- {note}" for note in summary.notes]
    for section in summary.sections:
        lines += ["", section]
    if summary.stages:
        lines += ["", "| stage | result | seconds |", "|---|---|---:|"]
        lines += [f"| {s.stage} | {_stage_word(s)} | {s.seconds:.0f} |" for s in summary.stages]
    validation = ValidationSummary.load_or_none(repo / ValidationSummary.path(paths))
    if validation:
        lines += ["", "## Data validation", "", validation.headline()]
        lines += [f"- `{c.check}` ({c.severity}): {c.failing} failing" for c in validation.checks if c.failing]
        drifted = ", ".join(f"{d.statistic} {d.change:+.3f}" for d in validation.drifting)
        lines.append(f"- drift: {drifted or 'within thresholds'}")
    evaluation = EvaluationMetrics.load_or_none(repo / EvaluationMetrics.path(paths))
    if evaluation:
        splits = evaluation.splits
        scores = [evaluation.scores(split) for split in splits]
        headline = [k for k in ("miou", "mean_dice", "pixel_accuracy", "accuracy", "balanced_accuracy", "macro_f1")
                    if scores[0].get(k) is not None]  # fmt: skip
        lines += ["", "## Metrics", "", "| metric | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
        lines += [f"| {k} | " + " | ".join(_figure(s.get(k)) for s in scores) + " |" for k in headline]
    decision = GateDecision.load_or_none(repo / GateDecision.path(paths))
    if decision:
        verb = "promoted to champion" if decision.promoted else f"kept as {decision.alias}"
        lines += ["", "## Promotion gate", "",
                  f"{decision.model_name} v{decision.version} {verb} "
                  f"(champion before: {decision.champion_before or 'none'})."]  # fmt: skip
        gate = decision.gate
        if gate:
            lines.append(
                f"- {decision.split}: mean {gate.metric} {gate.candidate_mean:.4f} vs {gate.champion_mean:.4f}, "
                f"difference {gate.mean_difference:+.4f}, {gate.confidence:.0%} CI "
                f"[{gate.ci_low:+.4f}, {gate.ci_high:+.4f}] over {gate.images} images"
            )
        lines += [f"- {reason}" for reason in decision.reasons]
    run = TrainingRun.load_or_none(repo / TrainingRun.path(paths))
    if run:
        lines += ["", "## MLflow", "", f"Run {mlflow_link(run)}"]
    return "\n".join(lines) + "\n"
