"""Champion, challenger, previous: the promotion gate applied to registry versions, rollback, and listings.

The register stage and the ``visionflow models / promote / rollback`` commands share these functions. Aliases:
``champion`` serves; on a promotion the old champion becomes ``previous``; a candidate that does not pass the
gate becomes ``challenger``. Every decision is written to a JSON file, to the version's tags and to the console.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from visionflow import tracking
from visionflow.config import Config
from visionflow.data.dataset import DecodedCache
from visionflow.errors import ConfigError, RegistryError
from visionflow.gate import Scores, decide, score_predictions
from visionflow.handoffs import AcceptedManifest, DatasetInfo, GateDecision, GateResult

__all__ = [
    "EvalSplit",
    "gate_and_alias",
    "gate_split",
    "load_split",
    "rollback",
    "score_version",
    "versions_table",
]


@dataclass(frozen=True)
class EvalSplit:
    """One eval split at original resolution: what both sides of the gate are scored on."""

    split: str  # val | test
    ids: list[str]
    images: list[np.ndarray]
    truths: list[Any]  # masks (segmentation) or class ids (classification)
    classes: tuple[str, ...]
    ignore_index: int
    task: str


def gate_split(config: Config, manifest: AcceptedManifest | None = None) -> str:
    """The split the gate scores on: ``register.gate_split``, where auto is test when the data has one, else val
    (the candidate's best epoch and threshold were chosen on val, so its val figures flatter it)."""
    chosen = config.register_.gate_split
    counts = (manifest or AcceptedManifest.read(config.paths)).per_split
    if chosen == "auto":
        return "test" if counts.get("test") else "val"
    if not counts.get(chosen):
        accepted = config.paths.accepted
        raise ConfigError(f"register.gate_split is {chosen}, but {accepted} has no accepted {chosen} images")
    return chosen


def load_split(config: Config, split: str) -> EvalSplit:
    """The accepted rows of ``split``, decoded (through the shared cache) at their original resolution."""
    paths = config.paths
    info = DatasetInfo.read(paths)
    rows = AcceptedManifest.read(paths).split(split)
    segmentation = info.task == "segmentation"
    cache = DecodedCache.open(rows, paths.cache, info if segmentation else None)
    images = [np.asarray(cache.image(i)) for i in range(len(cache))]
    if segmentation:
        truths: list[Any] = [np.asarray(cache.mask(i)) for i in range(len(cache))]
    else:
        truths = [int(v) for v in rows["label"]]
    ids = rows["id"].astype(str).tolist()
    return EvalSplit(split, ids, images, truths, info.classes, info.ignore_index, info.task)


class ClassesDiffer(RegistryError):
    """A registered version predicts other classes than the data it is asked to be scored on."""


def score_version(config: Config, uri: str, data: EvalSplit) -> Scores:
    """Score a logged model (``models:/name/3``, ``models:/name@champion``) on ``data`` with its own
    preprocessing."""
    predictor = tracking.load_predictor(config, uri)
    if tuple(predictor.meta.classes) != tuple(data.classes):
        raise ClassesDiffer(
            f"{uri} predicts classes {list(predictor.meta.classes)}; the {data.split} split has {list(data.classes)}"
        )
    predictions = predictor.predict(data.images)
    return score_predictions(predictions, data.truths, data.task, len(data.classes), data.ignore_index)


def _gate(config: Config, name: str, candidate: str, champion: str, data: EvalSplit) -> GateResult:
    reg = config.register_
    return decide(
        score_version(config, f"models:/{name}/{candidate}", data),
        score_version(config, f"models:/{name}/{champion}", data),
        data.classes,
        data.task,
        reg.min_delta,
        reg.max_class_drop,
        reg.bootstrap_resamples,
        reg.confidence,
        config.project.seed,
    )


def gate_and_alias(config: Config, version: str, force: bool = False, data: EvalSplit | None = None) -> GateDecision:
    """Compare ``version`` with the current champion on the gate's split (``data``, else :func:`gate_split`
    loaded) and move the aliases."""
    name = config.model_name
    tracking.model_version(config, name, version)  # a version that does not exist is named, not a crash
    champion = tracking.version_by_alias(config, name, "champion")
    champion_version = None if champion is None else str(champion.version)
    gate: GateResult | None = None
    if champion_version == str(version):
        return GateDecision(name, str(version), "champion", False, force, champion_version, ("already the champion",))
    if champion_version is None:
        promoted, reasons = True, ("no champion yet",)
    elif force:
        promoted, reasons = True, ("forced: the gate was not applied",)
    else:
        data = data or load_split(config, gate_split(config))
        try:
            gate = _gate(config, name, str(version), champion_version, data)
            promoted, reasons = gate.promote, gate.reasons
        except ClassesDiffer as exc:  # the name is shared with a model of another dataset: keep, never promote
            promoted, reasons = False, (f"not compared: {exc}; register.model_name names the registered model that "
                                        "this data's versions go to: give this dataset a name of its own",)  # fmt: skip
    if promoted:
        if champion_version is not None:
            tracking.set_alias(config, name, "previous", champion_version)
        tracking.set_alias(config, name, "champion", str(version))
        challenger = tracking.version_by_alias(config, name, "challenger")
        if challenger is not None and str(challenger.version) == str(version):
            tracking.delete_alias(config, name, "challenger")
    else:
        tracking.set_alias(config, name, "challenger", str(version))
    decision = GateDecision(
        name, str(version), "champion" if promoted else "challenger", promoted, force, champion_version, reasons, gate,
        None if gate is None or data is None else data.split,
    )  # fmt: skip
    tracking.set_version_tags(config, name, str(version), _decision_tags(decision))
    decision.write(config.paths)
    return decision


def _decision_tags(decision: GateDecision) -> dict[str, str]:
    tags = {
        "gate.decision": "promoted" if decision.promoted else "not promoted",
        "gate.reasons": " | ".join(decision.reasons)[:5000],
        "gate.champion_before": decision.champion_before or "none",
        "gate.forced": str(decision.forced).lower(),
    }
    if decision.gate:
        gate = decision.gate
        tags |= {
            "gate.mean_difference": f"{gate.mean_difference:.6f}",
            "gate.ci": f"[{gate.ci_low:.6f}, {gate.ci_high:.6f}]",
            "gate.images": str(gate.images),
            "gate.split": decision.split or "none",
        }
    return tags


def rollback(config: Config) -> tuple[str, str]:
    """``previous`` becomes ``champion`` again; the demoted version loses its alias. Returns (demoted, restored)."""
    name = config.model_name
    previous = tracking.version_by_alias(config, name, "previous")
    champion = tracking.version_by_alias(config, name, "champion")
    if previous is None:
        raise RegistryError(f"{name} has no version with alias 'previous'; nothing to roll back to")
    demoted = "none" if champion is None else str(champion.version)
    tracking.set_alias(config, name, "champion", str(previous.version), {"rolled_back_to": "true"})
    tracking.delete_alias(config, name, "previous")
    if champion is not None:
        tracking.set_version_tags(config, name, demoted, {"rolled_back_from": "true"})
    return demoted, str(previous.version)


def versions_table(config: Config) -> list[dict[str, Any]]:
    """One row per version: aliases, headline metric, lineage, gate decision."""
    metric = config.register_.metric or f"val_{config.primary_metric}"
    rows = []
    versions, aliases = tracking.list_versions(config, config.model_name)
    for version in versions:
        tags = version.tags or {}
        rows.append(
            {
                "version": str(version.version),
                "aliases": ",".join(sorted(aliases.get(str(version.version), []))),
                metric: tags.get(metric, ""),
                "created": datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M"),
                "git_commit": tags.get("git_commit", "")[:12],
                "gate": tags.get("gate.decision", ""),
                "run_id": version.run_id or "",
            }
        )
    return rows
