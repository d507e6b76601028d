"""plan: choose the train settings that params leave at ``auto`` from the train split's fingerprint, this kind of
machine's measured speed and ``plan.budget_minutes`` (visionflow.planning.rules has the rules and their reasons).

Writes plan.json (what train runs with) and plan.md (the table). The machine's measured speed is kept in
``paths.cache``/machine.json per machine kind and model, so that the plan changes when the data, the params or
the kind of machine change, and never because this machine was busier. Only the train split is read: no choice
depends on val or test (val's size enters only as the count of images a validation pass scores). With every key
pinned nothing is measured.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from tqdm import tqdm

from visionflow.config import PLANNED, Config
from visionflow.data.dataset import DecodedCache
from visionflow.data.transforms import round_up
from visionflow.engine import Runtime, resolve_device, resolve_precision
from visionflow.errors import ConfigError
from visionflow.handoffs import AcceptedManifest, DatasetInfo, Decision, PlanFile
from visionflow.planning.fingerprint import DataPrint, fingerprint
from visionflow.planning.machine import machine_kind, measure
from visionflow.planning.rules import MAX_BATCH_SHARE, MIN_CROP, Machine, Rate, plan

__all__ = ["run"]

MAX_PROBE_PIXELS = 16 * 384 * 480  # a measured batch holds at most this many pixels (keeps the probe short)


def _pinned(config: Config) -> dict[str, Any]:
    """The planned keys that params set: the planner keeps them."""
    out = {}
    for key in PLANNED:
        value = getattr(config.train, key)
        if value != "auto":
            out[f"train.{key}"] = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
    return out


def _probe(data: DataPrint, config: Config) -> tuple[list[tuple[int, int]], list[int]]:
    """The sizes and batches whose speed is measured: full resolution, half, and the smallest crop."""
    full = (round_up(int(data.height[1])), round_up(int(data.width[1])))
    half = (round_up(full[0] // 2), round_up(full[1] // 2))
    sizes = sorted({full, half, (min(MIN_CROP, full[0]), min(MIN_CROP, full[1]))}, key=lambda s: -s[0] * s[1])
    cap = max(2, int(MAX_BATCH_SHARE * data.images))
    batches = sorted({min(b, cap) for b in config.plan.batches})
    return sizes, batches


def _machine(config: Config, data: DataPrint, runtime: Runtime) -> Machine:
    """This machine kind's measured speed for this model, from machine.json where measured before."""
    sizes, batches = _probe(data, config)
    kind = machine_kind(runtime.device, runtime.precision)
    model = config.model
    key = json.dumps([kind, model.arch, model.encoder, sizes, batches, config.plan.steps])
    path = config.paths.machine_profile
    try:
        profiles = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:
        profiles = {}  # an unreadable profile is measured again
    if key in profiles:
        return Machine(kind, tuple(Rate(**r) for r in profiles[key]))
    print(f"plan: measuring {model.arch}-{model.encoder} on {kind} at {sizes} x batches {batches}")
    rates = []
    for size in sizes:  # the largest batches only where they stay within MAX_PROBE_PIXELS
        fitting = [b for b in batches if b * size[0] * size[1] <= MAX_PROBE_PIXELS] or batches[:1]
        rates += measure(model, "segmentation", len(data.classes), runtime, [size], fitting, config.plan.steps).rates
    profiles[key] = [r.__dict__ for r in rates]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profiles, indent=2) + "\n", encoding="utf-8")
    return Machine(kind, tuple(rates))


def run(config: Config) -> PlanFile:
    paths = config.paths
    info = DatasetInfo.read(paths)
    manifest = AcceptedManifest.read(paths)
    pinned = _pinned(config)
    if info.task == "classification" and config.auto_keys:
        raise ConfigError(
            f"{', '.join(config.auto_keys)}: auto is planned for segmentation only; set them in params.yaml"
        )
    if not config.auto_keys:  # nothing to decide: nothing measured, and the same file on every machine
        decisions = tuple(Decision(k, v, "", pinned=True) for k, v in pinned.items())
        model = f"{config.model.arch}-{config.model.encoder}"  # what a plan is for, measured or not
        made = PlanFile(f"not measured (every key pinned; {model})", config.plan.budget_minutes, 0.0, decisions)
    else:
        rows = manifest.split("train")
        cache = DecodedCache.open(rows, paths.cache, info)
        masks = (np.asarray(cache.mask(i)) for i in tqdm(range(len(cache)), desc="fingerprint", unit="img"))
        data = fingerprint(masks, info.classes, info.ignore_index)
        device = resolve_device(config.train.device)
        precision = resolve_precision(config.train.precision, device)
        runtime = Runtime(device, config.train.channels_last, precision)
        machine = _machine(config, data, runtime)
        made = plan(data, machine, config.plan.budget_minutes, manifest.per_split.get("val", 0), pinned)
    made.write(paths)
    paths.plan_report.write_text(made.report(), encoding="utf-8")
    print(f"plan: {paths.plan_file} ({made.machine}, budget {made.budget_minutes:g} min)")
    print(made.table())
    for note in made.notes:
        print(f"  - {note}")
    return made
