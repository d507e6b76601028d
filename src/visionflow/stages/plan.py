"""plan: choose the train settings that params leave at ``auto`` from the train split's fingerprint, this kind of
machine's measured speed and ``plan.budget_minutes`` (visionflow.planning.rules has the rules and their reasons).

Writes plan.json (what train runs with) and plan.md (the table). The probe times training's step (the model,
its loss, the clipping, the optimiser and the weight average) on random tensors at candidate sizes and batches;
then two real epochs at the planned settings (training's own epoch, data loading, augmentation, the val pass and
the saves included) scale those times, and where that moves the plan, the new settings are timed the same way (at
most ``MAX_CALIBRATIONS`` times). Both measurements are kept in ``paths.cache``/machine.json per
machine kind, model, settings and visionflow's code, so that the plan changes when the data, the params, the kind of
machine or the code that trains change, and never because this machine was busier. No choice depends on val's or
test's contents: the fingerprint reads the train split, and val enters only as the time a validation pass takes.
With every key pinned nothing is measured.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from visionflow.config import PLANNED, Config
from visionflow.data.dataset import DecodedCache
from visionflow.data.transforms import round_up
from visionflow.engine import Runtime, resolve_device, resolve_precision
from visionflow.errors import ConfigError
from visionflow.handoffs import GROUP_GIVEN, AcceptedManifest, DatasetInfo, PlanFile
from visionflow.planning.fingerprint import DataPrint, fingerprint
from visionflow.planning.machine import machine_kind, measure
from visionflow.planning.rules import (
    MIN_CROP,
    UNMEASURED_KEYS,
    Calibration,
    Machine,
    Rate,
    batch_cap,
    finest_width,
    full_size,
    needs_measuring,
    plan,
    unmeasured,
)
from visionflow.training import setup_runtime, time_epochs

__all__ = ["run", "stale"]

MAX_PROBE_PIXELS = 16 * 384 * 480  # a measured batch holds at most this many pixels (keeps the probe short)
MAX_CALIBRATIONS = 3  # settings timed by real epochs before the plan keeps the scaled estimate


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
    full = full_size(data)
    half = (round_up(full[0] // 2), round_up(full[1] // 2))
    sizes = sorted({full, half, (min(MIN_CROP, full[0]), min(MIN_CROP, full[1]))}, key=lambda s: -s[0] * s[1])
    cap = batch_cap(data)
    batches = sorted({min(b, cap) for b in config.plan.batches})
    return sizes, batches


@functools.cache
def _code() -> str:
    """A digest of the visionflow modules this stage imports (the code the probe and the real epochs run: the plan
    stage's deps in dvc.yaml). Measurements are kept per code as well, since a change to it may change the speed;
    computed once, when the stage's module is imported, so that every run keys them alike."""
    digest = hashlib.sha256()
    for name in sorted(n for n in sys.modules if n == "visionflow" or n.startswith("visionflow.")):
        file = getattr(sys.modules[name], "__file__", None)
        if file:
            digest.update(name.encode() + b"\0" + Path(file).read_bytes())
    return digest.hexdigest()[:16]


def _machine(config: Config, data: DataPrint, runtime: Runtime) -> Machine:
    """This machine kind's measured speed for this model, from machine.json where measured before."""
    sizes, batches = _probe(data, config)
    kind = machine_kind(runtime.device, runtime.precision)
    model = config.model
    step = config.train.model_dump(mode="json", include={"loss", "focal_gamma", "grad_clip", "ema_decay"})
    key = json.dumps([kind, model.arch, model.encoder, sizes, batches, config.plan.steps, config.train.num_threads,
                      step, _code()])  # fmt: skip
    path = config.paths.machine_profile
    profiles = _profiles(path)
    if key in profiles:
        return Machine(kind, tuple(Rate(**r) for r in profiles[key]))
    print(f"plan: measuring {model.arch}-{model.encoder} on {kind} at {sizes} x batches {batches}")
    rates = []
    for size in sizes:  # the largest batches only where they stay within MAX_PROBE_PIXELS
        fitting = [b for b in batches if b * size[0] * size[1] <= MAX_PROBE_PIXELS] or batches[:1]
        rates += measure(
            model, "segmentation", len(data.classes), runtime, [size], fitting, config.plan.steps, train=config.train
        ).rates
    _keep(path, key, [r.__dict__ for r in rates])
    return Machine(kind, tuple(rates))


def _profiles(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:
        return {}  # an unreadable profile is measured again


def _keep(path: Path, key: str, value: Any) -> None:
    profiles = _profiles(path)
    profiles[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profiles, indent=2) + "\n", encoding="utf-8")


def _calibrate(config: Config, made: PlanFile, kind: str, manifest: AcceptedManifest) -> Calibration:
    """Two real epochs of training at ``made``'s settings (from machine.json where timed before)."""
    trial = config.planned(made.overrides())
    rows = {split: manifest.split(split)["sha256"].tolist() for split in ("train", "val")}
    key = json.dumps(
        [
            "epochs",
            kind,
            trial.model.model_dump(mode="json"),
            trial.train.model_dump(mode="json", exclude={"epochs"}),  # the epochs change no epoch's time
            trial.eval_input.model_dump(mode="json"),  # what the val pass scores with
            [trial.evaluate.batch_size, trial.evaluate.overlap, trial.evaluate.flip],
            hashlib.sha256(json.dumps(rows).encode()).hexdigest(),
            _code(),
        ]
    )
    spec, batch = made.value("train.input"), int(made.value("train.batch_size"))
    path = config.paths.machine_profile
    kept = _profiles(path).get(key)
    if kept is None:
        print(f"plan: timing two real epochs at {spec}, batch {batch}")
        with tempfile.TemporaryDirectory(prefix="visionflow-plan-") as scratch:
            paths = trial.paths.model_copy(update={"model": Path(scratch)})
            first, second = time_epochs(trial.model_copy(update={"paths": paths}), epochs=2)
        kept = {"first_seconds": first, "epoch_seconds": second}
        _keep(path, key, kept)
    return Calibration(spec, batch, kept["first_seconds"], kept["epoch_seconds"])


def stale(config: Config, root: Path = Path(".")) -> str | None:
    """Why the plan in ``root`` no longer holds here (DVC cannot see the machine change): it was measured on
    another kind of machine than this one, and params leave keys to it. None where it holds, or there is none."""
    made = PlanFile.load_or_none(root / config.paths.plan_file)
    if made is None or not config.auto_keys or made.machine.startswith("not measured"):
        return None
    device = resolve_device(config.train.device)  # a read-only check: torch's threads are left as they are
    kind = machine_kind(device, resolve_precision(config.train.precision, device))
    if made.machine == kind:
        return None
    return f"{config.paths.plan_file} was planned on '{made.machine}'; this machine is '{kind}'"


def run(config: Config, speed: float = 1.0) -> PlanFile:
    """Plan, write plan.json and plan.md, and print the table. With ``speed`` other than 1, plan as for a machine
    ``speed`` times as fast as this one (its measured rates and calibrated epochs scaled) and write no plan (this
    machine is still measured, or its kept measurements read, in ``paths.cache``): what a slower or faster machine
    would train, with the reasons."""
    paths = config.paths
    info = DatasetInfo.read(paths)
    manifest = AcceptedManifest.read(paths)
    pinned = _pinned(config)
    classifier = info.task == "classification"
    if classifier and (measured := [k for k in config.auto_keys if k not in UNMEASURED_KEYS]):
        raise ConfigError(
            f"{', '.join(measured)}: auto is planned for segmentation only; a classifier's are set in params.yaml "
            "(examples/digits.yaml sets them for the digits)"
        )
    if classifier or not needs_measuring(config.auto_keys):  # nothing to measure: the same file on every machine
        model = f"{config.model.arch}-{config.model.encoder}" if not classifier else config.model.arch
        data = None if classifier or "train.augment" not in config.auto_keys else _fingerprint(config, info, manifest)
        made = unmeasured(pinned, config.auto_keys, model, config.plan.budget_minutes, data)  # names what it is for
    else:
        made = _measured_plan(config, info, manifest, pinned, speed)
    if speed == 1:
        made.write(paths)
        paths.plan_report.write_text(made.report(), encoding="utf-8")
        print(f"plan: {paths.plan_file} ({made.machine}, budget {made.budget_minutes:g} min)")
    else:
        print(f"plan: as for a machine {speed:g}x as fast as this one ({made.machine}); no plan written")
    print(made.table())
    for note in made.notes:
        print(f"  - {note}")
    return made


def _fingerprint(config: Config, info: DatasetInfo, manifest: AcceptedManifest) -> DataPrint:
    """The train split's fingerprint, from its decoded masks (the cache training reads), with the number of groups
    its images come from (those named by data.groups; an image that is a group of its own does not count)."""
    rows = manifest.split("train")
    cache = DecodedCache.open(rows, config.paths.cache, info)
    masks = (np.asarray(cache.mask(i)) for i in tqdm(range(len(cache)), desc="fingerprint", unit="img"))
    named = rows.loc[rows["group_from"].isin(GROUP_GIVEN), "group"]
    return replace(fingerprint(masks, info.classes, info.ignore_index), groups=int(named.nunique()) or None)


def _measured_plan(config: Config, info: DatasetInfo, manifest: AcceptedManifest, pinned: dict[str, Any],
                   speed: float) -> PlanFile:  # fmt: skip
    """The plan from the train split's fingerprint and this machine's measured speed, the planned settings timed by
    real epochs until the plan stays where it was timed; then, for ``speed`` != 1, planned again with every
    measured time divided by ``speed``."""
    data = _fingerprint(config, info, manifest)
    machine = _machine(config, data, setup_runtime(config.train))
    val_images = manifest.per_split.get("val", 0)
    budget, crops, finest = config.plan.budget_minutes, config.plan.crops, finest_width(config.model.arch)
    val_passes = 1 if config.train.ema_decay is None else 2  # the weights, then their moving average
    made = plan(data, machine, budget, val_images, pinned, crops=crops, finest=finest, val_passes=val_passes)
    calibration = None
    for _ in range(MAX_CALIBRATIONS):  # time the planned settings until the plan stays where it was timed
        calibration = _calibrate(config, made, machine.kind, manifest)
        made = plan(data, machine, budget, val_images, pinned, calibration, crops, finest, val_passes)
        if calibration.matches(made.value("train.input"), int(made.value("train.batch_size"))):
            break
    if speed != 1 and calibration is not None:  # the real epochs' overhead over the probe stays; times scale
        scaled = machine.scaled(speed), calibration.scaled(speed)
        made = plan(data, scaled[0], budget, val_images, pinned, scaled[1], crops, finest, val_passes)
    return made


_code()  # the modules imported with this one, before any run imports more
