"""The planner's rules: from the train split's fingerprint, the machine's measured speed and a wall-clock budget
to the input size and policy, the batch, the learning rate, the epochs and the crop settings, each with its
reason in words. Pure functions over small records: the plan stage measures and writes, this decides.

The rules (``../shared/PLANNING.md`` has the sources; each is to be checked by measurement):

1. **Scale floors.** For every class present in at least 1% of the train images, the scale at which its typical
   object (the width half of its pixels reach, objects weighted by area: :mod:`~visionflow.planning.fingerprint`)
   is ``w`` px wide; the largest of these is the floor for ``w`` (never above 1: nothing is enlarged). Whole
   images shrink at most to the 8 px floor (``WHOLE_WIDTH_PX``: the stride-8 level still sees every class; below
   it shrinking costs the thin ones). Crops may be cut from images shrunk further, down to the floor of the
   decoder's finest stride, below which an object is lost: 2 px for the U-Net family (skips from stride 2 up to a
   full-resolution head), 4 px for stride-4 heads (FPN, DeepLabV3+, Segformer, ...), 8 px otherwise
   (:func:`finest_width`).
2. **Whole image or crops.** The largest whole-image size between the 8 px floor and full resolution (each side a
   multiple of 32, the median aspect) at which ``TARGET_EPOCHS`` fit the budget; where none does, crops of the
   images shrunk to the finest-stride floor (the most passes over them the thinnest class allows; whole images at
   scale 0.5 for 10 epochs beat scale 0.34 for 21 on the wires set), half the shrunk image's side
   (no smaller than ``MIN_CROP``: context), scored by sliding windows at that scale, a third of them centred on a
   rare class, and as many from each image an epoch as keep the val pass (every window of every val image)
   within ``VAL_SHARE`` of the epoch while ``MIN_CROP_EPOCHS`` fit. (Measured on the wires set: one 128 px crop
   per image an epoch left the val pass most of each epoch and lost to the resize baseline; two 512 px crops at
   full resolution, 2.6 passes over the images in 10 minutes, still lost, undertrained.)
3. **Batch.** The smallest measured batch that reaches 90% of the best measured images per second at the planned
   size, clamped to [2, 5% of the train images].
4. **Learning rate.** ``REFERENCE_LR`` at ``REFERENCE_BATCH``, scaled by the square root of the batch ratio
   (AdamW).
5. **Epochs.** As many as ``FILL`` of the budget holds at the measured step and validation times, at least one:
   the one-cycle schedule then decays to zero just before the end of the budget. (Measured: on a shared 2-core
   host the 29 epochs of a 40-minute CamVid run took 1.13x the calibrated epoch's time, 10% over a plan that
   filled the budget; aiming 5% under lands within 10% of it for drift up to 1.15x.) The probe times the model
   alone on random tensors; a :class:`Calibration` (real epochs at the planned settings: data loading,
   augmentation, the val pass and the saves included) scales every probed time by what it measured, and where it
   was taken at the settings planned, its epoch time sets the epochs.

A value pinned in params is kept; the others are planned around it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from visionflow.data.transforms import STRIDE, round_up
from visionflow.handoffs import Decision
from visionflow.handoffs import PlanFile as Plan
from visionflow.planning.fingerprint import DataPrint
from visionflow.windows import window_starts

__all__ = [
    "FILL",
    "PLANNED_KEYS",
    "UNMEASURED_KEYS",
    "Calibration",
    "Machine",
    "Rate",
    "batch_cap",
    "finest_width",
    "full_size",
    "needs_measuring",
    "plan",
    "scale_floor",
    "unmeasured",
]

FINEST_WIDTH_PX = {"Unet": 2, "UnetPlusPlus": 2, "MAnet": 2, "Linknet": 2, "FPN": 4, "DeepLabV3Plus": 4,
                   "PAN": 4, "UPerNet": 4, "Segformer": 4}  # fmt: skip  # rule 1: by the decoder's finest stride
OTHER_WIDTH_PX = 8  # rule 1: decoders not listed (PSPNet, DeepLabV3: stride 8)
WHOLE_WIDTH_PX = 8  # rule 1: whole images shrink while every common class stays this wide
PRESENT_SHARE = 0.01  # rule 1: classes in at least this share of the train images bound the scale
TARGET_EPOCHS = 20  # rule 2: the epochs a size must leave in the budget
MIN_CROP = 128  # rule 2: the smallest crop side (context a crop must keep)
VAL_SHARE = 0.25  # rule 2, crops: the share of an epoch its validation pass may take (at full resolution)
MIN_CROP_EPOCHS = 3  # rule 2, crops: the epochs the crops per image must leave in the budget
FILL = 0.95  # rule 5: the share of the budget the planned epochs fill (the rest absorbs a busier host)
BATCH_SHARE = 0.9  # rule 3: the share of the peak images per second a batch must reach
MAX_BATCH_SHARE = 0.05  # rule 3: a batch holds at most this share of the train images
REFERENCE_LR, REFERENCE_BATCH = 3e-3, 16  # rule 4: AdamW, one-cycle, as tuned on the built-in data
OVERLAP = 0.5  # rule 2: the sliding windows' overlap validation is timed at (evaluate.overlap's default)
RARE_CROPS = 1 / 3  # rule 2: the share of crops centred on a rare class (nnU-Net's foreground share)
PLANNED_KEYS = ("train.input", "train.batch_size", "train.lr", "train.epochs", "train.rare_crops")


@dataclass(frozen=True)
class Rate:
    """One measurement: training steps at this input size and batch, and validation at this size."""

    height: int
    width: int
    batch: int
    train_images_per_second: float
    eval_images_per_second: float

    @property
    def pixels(self) -> int:
        return self.height * self.width


@dataclass(frozen=True)
class Machine:
    """What the plan depends on about the machine: its kind (the plan is cached per kind) and its speed."""

    kind: str  # e.g. "cpu: Intel Xeon, 2 cores, bf16" or "cuda: NVIDIA H200"
    rates: tuple[Rate, ...]
    overhead: float = 1.0  # real epochs' time over the probe's (a Calibration's ratio): loading, augmenting, saving

    def seconds_per_image(self, height: int, width: int, batch: int | None = None) -> tuple[float, float]:
        """(train, eval) seconds per image at this size: from the measurement nearest in pixels (at ``batch``, or
        the best batch), scaled by the pixel ratio (convolution cost grows with the pixels)."""
        pool = [r for r in self.rates if batch is None or r.batch == batch] or list(self.rates)
        nearest = min(pool, key=lambda r: (abs(math.log(r.pixels / (height * width))), -r.train_images_per_second))
        if batch is None:  # the best batch measured at that size
            same = [r for r in pool if r.pixels == nearest.pixels]
            nearest = max(same, key=lambda r: r.train_images_per_second)
        ratio = self.overhead * height * width / nearest.pixels
        return ratio / nearest.train_images_per_second, ratio / nearest.eval_images_per_second


@dataclass(frozen=True)
class Calibration:
    """Two real epochs at one setting, as training runs them: what the probe's model-only times leave out."""

    input: dict[str, Any]  # the train.input spec it ran at
    batch: int
    first_seconds: float  # the first epoch: start-up (loader workers, first allocations) included
    epoch_seconds: float  # the second: what every later epoch costs

    def matches(self, spec: Mapping[str, Any], batch: int) -> bool:
        return dict(spec) == dict(self.input) and batch == self.batch


def _side(value: float) -> int:
    """A side of the model's input: ``value`` rounded up to the encoder's stride, at least one stride."""
    return max(STRIDE, round_up(math.ceil(value - 1e-9)))


def batch_cap(data: DataPrint) -> int:
    """Rule 3's bound: a batch holds at most MAX_BATCH_SHARE of the train images (and at least 2)."""
    return max(2, int(MAX_BATCH_SHARE * data.images))


def full_size(data: DataPrint) -> tuple[int, int]:
    """The median train image at full resolution, each side rounded up to the stride: what crops are cut from."""
    return _side(data.height[1]), _side(data.width[1])


def finest_width(arch: str) -> int:
    """Rule 1: the narrowest object (px, at the model's scale) the architecture's decoder resolves."""
    return FINEST_WIDTH_PX.get(arch, OTHER_WIDTH_PX)


def scale_floor(data: DataPrint, finest: int = FINEST_WIDTH_PX["Unet"]) -> tuple[float, str]:
    """Rule 1: the smallest scale that keeps every common class's typical object (the width half its pixels
    reach) at least ``finest`` px wide, and why."""
    bounds = [
        (finest / width, c, width)
        for c in data.classes
        if c.image_share >= PRESENT_SHARE and (width := c.width_by_pixels)
    ]
    if not bounds:
        return 1.0, "no class has objects to measure: full resolution"
    need, bound, width = max(bounds, key=lambda b: b[0])
    if need >= 1:
        return 1.0, (
            f"half of {bound.name}'s pixels lie in objects {width:.1f} px wide or less at full resolution (under "
            f"{finest} px): no shrinking"
        )
    return need, (
        f"{bound.name}'s typical object (half its pixels), {width:.1f} px wide, reaches {finest} px at scale "
        f"{need:.2f}: the thinnest common class bounds the scale"
    )


def _passes(machine: Machine, images: int, size: Sequence[int], val_images: int, batch: int | None,
            full: Sequence[int] | None = None) -> tuple[float, float]:  # fmt: skip
    """(train, val) seconds of one epoch: the train images at ``size`` (one image or crop each), then val: whole
    images at ``size``, or, with ``full`` (crops), every window of each full-size image."""
    train_s, eval_s = machine.seconds_per_image(int(size[0]), int(size[1]), batch)
    windows = 1 if full is None else math.prod(len(window_starts(int(f), int(w), OVERLAP))
                                               for f, w in zip(full, size, strict=True))  # fmt: skip
    return images * train_s, val_images * windows * eval_s


def _shrunk(full: Sequence[int], scale: float) -> tuple[int, int]:
    """The full-size image shrunk by ``scale`` (each side rounded up to the stride): what crops and windows are
    cut from."""
    return _side(full[0] * scale), _side(full[1] * scale)


def _epoch_seconds(machine: Machine, images: int, spec: Mapping[str, Any], val_images: int, batch: int | None,
                   full: Sequence[int]) -> float:  # fmt: skip
    """One epoch at the ``train.input`` spec: its crops per image from each train image, then the val pass."""
    cropped = spec["policy"] == "crop"
    windowed = _shrunk(full, float(spec.get("scale", 1.0))) if cropped else None
    train, val = _passes(machine, images, spec["size"] or full, val_images, batch, windowed)
    return train * int(spec.get("crops_per_image", 1)) + val


def plan(
    data: DataPrint,
    machine: Machine,
    budget_minutes: float,
    val_images: int,
    pinned: Mapping[str, Any] | None = None,
    calibration: Calibration | None = None,
    crops: bool = True,
    finest: int = FINEST_WIDTH_PX["Unet"],
) -> Plan:
    """The plan for training on ``data`` on ``machine`` in ``budget_minutes`` (validation passes included), with
    ``pinned`` (dotted params keys set in params) kept as given, and the probe's times scaled by ``calibration``
    (where its settings are the planned ones, its epoch time sets the epochs); without ``crops`` the input is
    always the whole image. ``finest``: the narrowest object the model resolves (:func:`finest_width`)."""
    pinned = dict(pinned or {})
    budget = budget_minutes * 60
    median = (data.height[1], data.width[1])
    full = full_size(data)
    floor, floor_reason = scale_floor(data, WHOLE_WIDTH_PX)
    crop_floor, crop_reason = scale_floor(data, finest)
    decisions: list[Decision] = []
    notes = [
        f"scale floor {floor:.2f} for whole images ({WHOLE_WIDTH_PX} px): {floor_reason}",
        f"scale floor {crop_floor:.2f} for crops ({finest} px, the decoder's finest stride): {crop_reason}",
    ]
    if calibration is not None:
        probed = _epoch_seconds(machine, data.images, calibration.input, val_images, calibration.batch, full)
        machine = replace(machine, overhead=calibration.epoch_seconds / probed)
        notes.append(
            f"real epochs at {_show_input(calibration.input)}, batch {calibration.batch} took "
            f"{calibration.epoch_seconds:.1f} s, {machine.overhead:.2f}x the probe's model-only estimate (data "
            "loading, augmentation, the val pass's metrics, saves): every time is scaled by it"
        )

    # rule 2: size and policy
    if "train.input" in pinned:
        spec = dict(pinned["train.input"])
        decisions.append(Decision("train.input", spec, "", pinned=True))
    else:
        spec, reason = _input(data, machine, budget, val_images, (floor, crop_floor), floor_reason, median, full,
                              crops)  # fmt: skip
        decisions.append(Decision("train.input", spec, reason))
    size = tuple(spec["size"]) if spec.get("size") else full
    windowed = spec.get("policy") == "crop"

    # rule 3: batch
    cap = batch_cap(data)
    if "train.batch_size" in pinned:
        batch = int(pinned["train.batch_size"])
        decisions.append(Decision("train.batch_size", batch, "", pinned=True))
    else:
        batch, reason = _batch(machine, size, cap)
        decisions.append(Decision("train.batch_size", batch, reason))

    # rule 4: learning rate
    if "train.lr" in pinned:
        decisions.append(Decision("train.lr", float(pinned["train.lr"]), "", pinned=True))
    else:
        decisions.append(Decision("train.lr", *_lr(batch)))

    # rule 5: epochs
    epoch = _epoch_seconds(machine, data.images, spec, val_images, batch, full)
    startup, how = 0.0, "estimated"
    if calibration is not None and calibration.matches(spec, batch):
        epoch, how = calibration.epoch_seconds, "measured"
        startup = max(0.0, calibration.first_seconds - calibration.epoch_seconds)
    if "train.epochs" in pinned:
        epochs = int(pinned["train.epochs"])
        decisions.append(Decision("train.epochs", epochs, "", pinned=True))
    else:
        epochs = max(1, int((FILL * budget - startup) // epoch))
        decisions.append(
            Decision(
                "train.epochs",
                epochs,
                f"{FILL:.0%} of {budget_minutes:g} min / {epoch:.1f} s an epoch, {how} ({data.images} train images"
                + (f" x {spec['crops_per_image']} crops" if spec.get("crops_per_image", 1) > 1 else "")
                + f" at {size[0]}x{size[1]}, batch {batch}, then {val_images} val images"
                + (f"; the first epoch's start-up {startup:.1f} s more)" if startup else ")"),
            )
        )

    if "train.rare_crops" in pinned:
        decisions.append(Decision("train.rare_crops", float(pinned["train.rare_crops"]), "", pinned=True))
    else:
        why = _RARE_WHY if windowed else "no crops: unused"
        decisions.append(Decision("train.rare_crops", round(RARE_CROPS, 3), why))
    estimated = (startup + epochs * epoch) / 60
    if estimated > budget_minutes * 1.1:
        notes.append(
            f"about {estimated:.1f} min, more than the {budget_minutes:g} min budget: "
            + ("the pinned values need it" if pinned else "one epoch at the smallest size already does")
        )
    return Plan(machine.kind, budget_minutes, round(estimated, 2), tuple(decisions), tuple(notes),
                json.loads(json.dumps(asdict(data))))  # fmt: skip


MEASURED_KEYS = ("train.input", "train.batch_size", "train.epochs")  # what needs the machine's speed
UNMEASURED_KEYS = ("train.input", "train.rare_crops")  # what :func:`unmeasured` plans for a classifier


def needs_measuring(auto: Sequence[str]) -> bool:
    """Whether planning ``auto`` needs the machine's speed (the lr follows a pinned batch, the crops' share a
    pinned input)."""
    return any(key in auto for key in MEASURED_KEYS)


def unmeasured(pinned: Mapping[str, Any], auto: Sequence[str], model: str, budget_minutes: float) -> Plan:
    """The plan where nothing needs measuring: the lr from a pinned batch (rule 4), the crops' share from a pinned
    input, or a classifier's whole images (it pools over the image, so each is fed at its own size, uncropped).
    The same file on every machine."""
    cropped = dict(pinned.get("train.input") or {}).get("policy") == "crop"
    chosen = {
        "train.input": ({"size": None, "policy": "resize"}, "classification: each image whole at its own size (the "
                        "classifier pools over all of it)"),
        "train.rare_crops": (round(RARE_CROPS, 3), _RARE_WHY if cropped else "no crops: unused"),
    }  # fmt: skip
    if "train.batch_size" in pinned:
        chosen["train.lr"] = _lr(int(pinned["train.batch_size"]))
    decisions = [Decision(key, value, "", pinned=True) for key, value in pinned.items()]
    decisions += [Decision(key, *chosen[key]) for key in auto]
    order = {key: at for at, key in enumerate(PLANNED_KEYS)}
    decisions.sort(key=lambda d: order[d.key])
    return Plan(f"not measured ({model})", budget_minutes, 0.0, tuple(decisions))


def _lr(batch: int) -> tuple[float, str]:
    """Rule 4, with its reason."""
    why = f"{REFERENCE_LR:g} at batch {REFERENCE_BATCH}, x sqrt({batch}/{REFERENCE_BATCH})"
    return REFERENCE_LR * math.sqrt(batch / REFERENCE_BATCH), why


_RARE_WHY = "a third of the crops centred on a rare class present (nnU-Net)"


def _input(data: DataPrint, machine: Machine, budget: float, val_images: int, floors: tuple[float, float],
           floor_reason: str, median: tuple[float, float], full: tuple[int, int],
           crops: bool) -> tuple[dict[str, Any], str]:  # fmt: skip
    """Rule 2: the largest whole-image size between the (whole-image) floor and full resolution that leaves
    TARGET_EPOCHS in the budget; else crops of the images shrunk to the crop floor (without ``crops``: whole
    images below the floor, down to 32 px)."""
    floor, crop_floor = floors
    scale = 1.0
    bound = f"{floor_reason.split(':')[0]} allows down to {floor:.2f}"
    if not crops:
        floor, bound = 0.0, "crops are off (plan.crops: false), so the scale floor does not bound it"
    while True:
        size = (_side(median[0] * scale), _side(median[1] * scale))
        epoch = sum(_passes(machine, data.images, size, val_images, None))
        if budget / epoch >= TARGET_EPOCHS:
            if size == full:
                return {"size": list(size), "policy": _whole_policy(median, full)}, (
                    f"the whole image at full resolution ({size[0]}x{size[1]}) leaves {int(budget // epoch)} "
                    f"epochs (>= {TARGET_EPOCHS}) in the budget"
                )
            return {"size": list(size), "policy": "resize"}, (
                f"the largest whole-image size that leaves {TARGET_EPOCHS} epochs in the budget (scale "
                f"{scale:.2f}; {bound})"
            )
        smaller = scale - 32 / max(median)
        if smaller < floor - 1e-9 or min(median) * smaller < 32:
            break
        scale = smaller
    if not crops:
        return {"size": list(size), "policy": "resize"}, (
            f"no whole-image size leaves {TARGET_EPOCHS} epochs in the budget and crops are off (plan.crops: "
            f"false): the smallest, {size[0]}x{size[1]}"
        )
    # crops of the images shrunk to the floor: half the shrunk side (at least MIN_CROP), several an epoch
    shrunk = _shrunk(full, crop_floor)
    scale = round(max(shrunk) / max(full), 4) if crop_floor < 1 else 1.0  # the shrunk sides land on the stride
    crop = tuple(min(side, max(MIN_CROP, side // 2 // STRIDE * STRIDE)) for side in shrunk)
    at = "full resolution" if scale == 1 else f"scale {scale:g} ({shrunk[0]}x{shrunk[1]}, the crop floor)"
    if crop[0] >= shrunk[0] and crop[1] >= shrunk[1]:  # no crop smaller than MIN_CROP cuts anything from these
        return {"size": list(full), "policy": _whole_policy(median, full)}, (
            f"no whole-image size from scale {floor:.2f} leaves {TARGET_EPOCHS} epochs in the budget, and the "
            f"images at {at} are no larger than the smallest crop ({MIN_CROP} px): the whole image at full "
            "resolution, fewer epochs"
        )
    per_image, share = _crops_per_image(machine, data.images, crop, val_images, shrunk, budget)
    spec: dict[str, Any] = {"size": list(crop), "policy": "crop", "crops_per_image": per_image}
    if scale != 1:
        spec["scale"] = scale
    return spec, (
        f"no whole-image size from scale {floor:.2f} ({floor_reason.split(':')[0]}) to full resolution leaves "
        f"{TARGET_EPOCHS} epochs in the budget: {crop[0]}x{crop[1]} crops at {at}, half its side, scored by "
        f"sliding windows; {per_image} from each image an epoch, so that validation takes {share:.0%} of it"
    )


def _crops_per_image(machine: Machine, images: int, crop: Sequence[int], val_images: int, full: Sequence[int],
                     budget: float) -> tuple[int, float]:  # fmt: skip
    """Rule 2 for crops: enough crops from each image an epoch that its validation pass (every window of every
    val image) takes at most VAL_SHARE of it, while MIN_CROP_EPOCHS still fit the budget (at least one); and the
    share validation then takes."""
    train, val = _passes(machine, images, crop, val_images, None, full)
    wanted = math.ceil(val * (1 - VAL_SHARE) / VAL_SHARE / train)
    fitting = math.floor((budget / MIN_CROP_EPOCHS - val) / train)
    per_image = max(1, min(wanted, fitting))
    return per_image, val / (per_image * train + val)


def _batch(machine: Machine, size: Sequence[int], cap: int) -> tuple[int, str]:
    """Rule 3: the smallest measured batch within 90% of the peak images per second at the nearest size."""
    pixels = int(size[0]) * int(size[1])
    nearest = min({r.pixels for r in machine.rates}, key=lambda p: abs(math.log(p / pixels)))
    at = sorted((r for r in machine.rates if r.pixels == nearest), key=lambda r: r.batch)
    peak = max(r.train_images_per_second for r in at)
    chosen = next(r for r in at if r.train_images_per_second >= BATCH_SHARE * peak)
    batch = min(max(2, chosen.batch), cap)
    why = (
        f"the smallest batch within {BATCH_SHARE:.0%} of the peak {peak:.1f} img/s measured near "
        f"{size[0]}x{size[1]} ({chosen.train_images_per_second:.1f} img/s at {chosen.batch})"
    )
    if batch != chosen.batch:
        why += f", clamped to [2, {cap}] (5% of the train images)"
    return batch, why


def _whole_policy(median: Sequence[float], full: Sequence[int]) -> str:
    """The whole image at full resolution: padded to the stride where it is not a multiple of it, else as it is."""
    return "pad" if (median[0], median[1]) != tuple(full) else "resize"


def _show_input(spec: Mapping[str, Any]) -> str:
    size = spec.get("size")
    scaled = f" at scale {spec['scale']:g}" if spec.get("scale", 1) != 1 else ""
    return f"{spec['policy']} {size[0]}x{size[1]}{scaled}" if size else f"{spec['policy']} at full size"
