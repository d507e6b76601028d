"""The planner's rules: from the train split's fingerprint, the machine's measured speed and a wall-clock budget
to the input scale and policy, the batch, the learning rate, the epochs and the crop settings, each with its
reason in words. Pure functions over small records: the plan stage measures and writes, this decides.

The rules (``../shared/PLANNING.md`` has the sources and the measurements; each is to be checked by measurement):

1. **Scale floor.** For every class present in at least 1% of the train images, the scale at which its typical
   width (the median local thickness over its pixels: :mod:`~visionflow.planning.fingerprint`) is as wide as
   the decoder's finest stride resolves: 2 px for the U-Net family (skips from stride 2 up to a full-resolution
   head), 4 px for stride-4 heads (FPN, DeepLabV3+, Segformer, ...), 8 px otherwise (:func:`finest_width`). The largest
   of these is the floor, never above 1 (nothing is enlarged). One floor bounds whole images and crops alike: one
   network sees one scale whichever way the pixels reach it.
2. **Size: the scale from samples, then whole image or crops.** A ladder of scales (:func:`ladder`) from full
   resolution down to the floor, each rung ``RUNG`` (2**-0.25: sides ~16% shorter, ~1.41x fewer pixels) below
   the one above and the floor the last (or, where it is higher, the scale that leaves the median image's short
   side ``MIN_CROP`` px: the stride-32 bottleneck keeps 4x4 cells, nnU-Net's bound; images already smaller stay at
   full resolution); a rung's size is the median image's sides at its scale, rounded up to the stride; rungs that
   round to the same size, or to fewer than ``MERGE`` times fewer pixels than the rung above, are merged. The
   scale is the largest rung at which ``MIN_PASSES`` passes (one over the train images at the rung's size, then
   one val pass) fit ``FILL`` of the budget; where none does, the smallest, with fewer passes (a note says so).
   The cost is the same whatever the policy, so the scale does not depend on it, and, the cost model being
   continuous and monotone in pixels (:meth:`Machine.seconds_per_image`), a faster machine or a longer budget
   never lowers the scale, and a 10% change of either moves it at most one rung. At that scale the whole image
   where it has at most ``WHOLE_MAX_PIXELS`` (padded or as it is at full resolution, else resized to the rung's
   size); larger images are cut into crops, half the shrunk image's side (no smaller than ``MIN_CROP``: context),
   scored by sliding windows at that scale, a third of them centred on a rare class, and as many from each image
   an epoch as keep the val pass (every window of every val image) within ``VAL_SHARE`` of the epoch while
   ``MIN_CROP_EPOCHS`` fit. (Measured on the wires set: one 128 px crop per image an epoch left the val pass most
   of each epoch and lost to the resize baseline.) With crops off (``plan.crops: false``) the input is always the
   whole image, and the ladder goes on below the floor down to 32 px sides.
3. **Batch.** The smallest measured batch that reaches 90% of the best measured images per second at the planned
   size, clamped to [2, 5% of the train images].
4. **Learning rate.** ``REFERENCE_LR`` at ``REFERENCE_BATCH``, scaled by the square root of the batch ratio
   (AdamW).
5. **Epochs.** As many as ``FILL`` of the budget holds at the measured step and validation times, at least one:
   the one-cycle schedule then decays to zero just before the end of the budget. (Measured: on a shared 2-core
   host the 29 epochs of a 40-minute CamVid run took 1.13x the calibrated epoch's time, 10% over a plan that
   filled the budget; aiming 5% under lands within 10% of it for drift up to 1.15x.) The probe times training's
   step (model, loss, clipping, optimiser, weight average) on random tensors; a :class:`Calibration` (real epochs
   at the planned settings: data loading, augmentation, the val pass and the saves included) scales every probed
   time by what it measured, and where it was taken at the settings planned, its epoch time sets the epochs.

6. **Augmentation** (:func:`augment_policy`). nnU-Net's default set (zoom, rotation, brightness, contrast, gamma,
   blur, noise, mirroring) through ``torchvision.transforms.v2``, with its ranges, zoom-and-rotation and each
   colour change at p 0.5 (``GEOMETRY``, ``PHOTOMETRIC``). Mirroring
   and large rotations only where the train masks give no reason against them: where a class holding at least
   ``LAYOUT_SHARE`` of the labelled pixels lies on average ``LAYOUT_SHIFT`` of the height off the middle, and on
   that side in ``LAYOUT_IMAGES`` of the images holding it (a sky on top, a road below), no vertical flips and
   rotations only to a camera's tilt (``TILT``); the same test on the width turns left-right flips off. Without
   masks (a classifier) the same upright policy, since nothing says which way up its images may be turned.
   Saturation is left alone: colour may be what tells classes apart. All this where the train images come from
   groups (``data.groups``, at least ``GROUP_IMAGES`` a group: frames of one video repeat their scene, and the
   model is to serve groups it has not seen; measured on CamVid split by sequence) or training makes at least
   ``FULL_AUGMENT_PASSES`` passes over them; with fewer passes over ungrouped images the model is still fitting
   them and the policy is a left-right flip (where the layout allows it), measured better there.

A value pinned in params is kept; the others are planned around it.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from visionflow.data.transforms import STRIDE, round_up, scaled_size
from visionflow.handoffs import Decision
from visionflow.handoffs import PlanFile as Plan
from visionflow.planning.fingerprint import DataPrint
from visionflow.windows import window_starts

__all__ = [
    "FILL",
    "MIN_PASSES",
    "PLANNED_KEYS",
    "UNMEASURED_KEYS",
    "Calibration",
    "Machine",
    "Rate",
    "Rung",
    "augment_policy",
    "batch_cap",
    "finest_width",
    "full_size",
    "input_scale",
    "ladder",
    "needs_measuring",
    "plan",
    "scale_floor",
    "unmeasured",
]

FINEST_WIDTH_PX = {"Unet": 2, "UnetPlusPlus": 2, "MAnet": 2, "Linknet": 2, "FPN": 4, "DeepLabV3Plus": 4,
                   "PAN": 4, "UPerNet": 4, "Segformer": 4}  # fmt: skip  # rule 1: by the decoder's finest stride
OTHER_WIDTH_PX = 8  # rule 1: decoders not listed (PSPNet, DeepLabV3: stride 8)
PRESENT_SHARE = 0.01  # rule 1: classes in at least this share of the train images bound the scale
RUNG = 2**-0.25  # rule 2: one rung of the ladder of scales: sides ~16% shorter, ~1.41x fewer pixels. A 10% change
# of the budget moves the fitting scale ~5%: on 1024 px images that is 50 px, more than a 32 px grid's step
MERGE = 1.2  # rule 2: a rung holds at least this many times fewer pixels than the one above, else it is merged
# (rounding sides up to 32 can leave two rungs 9% apart, and a 10% change of speed could then move the scale past
# both; 1.2x the pixels still costs over 10% more where cost grows as pixels**0.75, the CPU probes' slowest growth)
# rule 2: the passes over the train images a scale must leave in the budget, below which it steps down. On CamVid
# full frames for 13 passes were undertrained (val loss still falling) and 26 reached .617 (standard split). On the
# sequence split (val shares no scene with train; benchmarks/generalise.py, bf16, 2026-12-07) resolution bought more
# than passes past 16: on a 2-core Zen 4 full frames for 16 passes reached .396 against .378 for 320x416 at 18
# (paired +0.008 [+0.003, +0.013], 3289bf6), on a 2-core Xeon with AMX .386-.403 at 20-24 (aef73e1, 902d238)
# against .375-.381 at 320x416 for 22-23 (fb8f320); the wires set agrees (whole images at scale 0.5 for 10
# epochs beat scale 0.34 for 21, .653 vs .609)
MIN_PASSES = 16
# rule 2: whole images up to CamVid's full frame (whole frames at full resolution for 26 epochs measured .617 against
# a hand-tuned .581); larger ones are cut into crops (the wires set at 480x480, 230k px: 224 px crops, 3 per image
# an epoch, reached .715 against whole images' .591 at the same scale and budget)
WHOLE_MAX_PIXELS = 384 * 480
# rule 2: the smallest crop side (context a crop must keep), and the shortest side an image is shrunk to (with crops
# on): the stride-32 bottleneck keeps 4x4 cells, nnU-Net's bound; images already smaller stay at full resolution
MIN_CROP = 128
VAL_SHARE = 0.25  # rule 2, crops: the share of an epoch its validation pass may take
MIN_CROP_EPOCHS = 3  # rule 2, crops: the epochs the crops per image must leave in the budget
FILL = 0.95  # rules 2 and 5: the share of the budget the planned passes fill (the rest absorbs a busier host)
BATCH_SHARE = 0.9  # rule 3: the share of the peak images per second a batch must reach
MAX_BATCH_SHARE = 0.05  # rule 3: a batch holds at most this share of the train images
REFERENCE_LR, REFERENCE_BATCH = 3e-3, 16  # rule 4: AdamW, one-cycle, as tuned on the built-in data
OVERLAP = 0.5  # rule 2: the sliding windows' overlap validation is timed at (evaluate.overlap's default)
RARE_CROPS = 1 / 3  # rule 2: the share of crops centred on a rare class (nnU-Net's foreground share)
# rule 6: augmentation. nnU-Net's set and ranges (get_training_transforms: rotation and zoom 0.7-1.4, brightness
# and contrast 0.75-1.25, gamma 0.7-1.5, blur sigma 0.5-1 at p 0.2, noise at p 0.1, mirroring on every axis); the
# zoom-and-rotation and each colour change at p 0.5 where nnU-Net has 0.2 and 0.15 (mmsegmentation's
# PhotoMetricDistortion draws each change at 0.5): a budgeted run sees each image tens of times, not nnU-Net's
# thousand, and CamVid split by sequence measured the model overfitting its train scenes within a few passes (the
# old defaults' val loss lowest at pass 5 of 24); flips and rotations beyond a camera's tilt only where no class
# keeps a side of the image
GEOMETRY = {"scale": [0.7, 1.4], "affine": 0.5}
PHOTOMETRIC = {"brightness": 0.25, "contrast": 0.25, "gamma": [0.7, 1.5], "colour": 0.5, "blur": 0.2, "noise": 0.1}
LAYOUT_SHIFT = 0.1  # rule 6: a class whose pixels lie on average this share of a side off the middle keeps a side
LAYOUT_IMAGES = 0.8  # rule 6: ... where its centre lies on that side of the middle in this share of its images
LAYOUT_SHARE = 0.01  # rule 6: ... read for the classes that hold at least this share of the labelled pixels
TILT = 15.0  # rule 6: the rotation (degrees either way) where up and down mean something: a camera's tilt
# rule 6: the passes over the train images (epochs x crops per image) from which the whole set pays; below, the
# model is still fitting the train images and augmentation beyond a left-right flip only slows it. Measured on the
# built-in shapes (64x64, batch 8; bf16 AMD EPYC Zen 4; docs/training.md "Input size and augmentation"): at 21 passes
# left-right flips alone reached val mIoU 0.857, with vertical flips 0.834, with rotation and zoom too 0.819,
# left-right flips with the photometric set 0.817, and every run was still rising at its last epoch
FULL_AUGMENT_PASSES = 40
# rule 6: train images from groups (data.groups) of at least this many images on average: the whole set whatever the
# passes (a model meant for groups it has not seen). Measured on CamVid split by sequence (2 groups, 184 frames a
# group; 40 min, 320x416, 22-23 passes; 2-core Xeon with AMX, bf16, fb8f320): the same val mIoU as left-right flips
# alone at the same plan (0.375 vs 0.381, paired difference -0.0006 [-0.0065, +0.0053]) and more under corruptions
# (mean 0.260 vs 0.238); at full frames (same Xeon, aef73e1, 902d238) with the average and 20 epochs against flips
# alone, no average and 24 epochs: 0.386 vs 0.403 (-0.023 [-0.029, -0.017]), under corruptions 0.267 vs 0.221
# (which of the three costs clean frames is not yet measured)
GROUP_IMAGES = 2
PLANNED_KEYS = ("train.input", "train.batch_size", "train.lr", "train.epochs", "train.rare_crops", "train.augment")


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
        """(train, eval) seconds per image at this size, continuous and non-decreasing in its pixels: log seconds
        interpolated linearly in log pixels between the measured sizes (at ``batch`` where it was measured, else
        each size's best batch), and proportional to the pixels beyond them (convolution cost grows with the
        pixels). A measured size that cost less per image than a smaller one is raised to the smaller one's cost
        (noise, or a device not yet busy), so that a smaller image never costs more."""
        pool = [r for r in self.rates if batch is None or r.batch == batch] or list(self.rates)
        best: dict[int, Rate] = {}
        for r in pool:
            if r.pixels not in best or r.train_images_per_second > best[r.pixels].train_images_per_second:
                best[r.pixels] = r
        pixels = sorted(best)
        logs = [math.log(p) for p in pixels]
        at = math.log(height * width)
        train = _log_curve(logs, [-math.log(best[p].train_images_per_second) for p in pixels], at)
        eval_ = _log_curve(logs, [-math.log(best[p].eval_images_per_second) for p in pixels], at)
        return self.overhead * math.exp(train), self.overhead * math.exp(eval_)

    def scaled(self, factor: float) -> Machine:
        """This machine ``factor`` times as fast: every measured rate times ``factor`` (the overhead kept). For
        what-ifs: the plan for a machine a third as fast is ``plan(data, machine.scaled(1 / 3), ...,
        calibration.scaled(1 / 3))`` (an unscaled calibration would scale the probe back to this machine)."""
        rates = tuple(
            replace(r, train_images_per_second=r.train_images_per_second * factor,
                    eval_images_per_second=r.eval_images_per_second * factor)
            for r in self.rates
        )  # fmt: skip
        return replace(self, kind=f"{self.kind} (x{factor:.3g} speed)", rates=rates)


def _log_curve(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """The piecewise-linear curve through (xs, ys) (xs ascending; ys raised to their running maximum, so the curve
    never falls), with slope 1 beyond its ends, at ``x``."""
    ys = [max(ys[: i + 1]) for i in range(len(ys))]
    if x <= xs[0]:
        return ys[0] + x - xs[0]
    if x >= xs[-1]:
        return ys[-1] + x - xs[-1]
    i = bisect.bisect_right(xs, x) - 1
    return ys[i] + (ys[i + 1] - ys[i]) * (x - xs[i]) / (xs[i + 1] - xs[i])


@dataclass(frozen=True)
class Calibration:
    """Two real epochs at one setting, as training runs them: what the probe's steps on random tensors leave out."""

    input: dict[str, Any]  # the train.input spec it ran at
    batch: int
    first_seconds: float  # the first epoch: start-up (loader workers, first allocations) included
    epoch_seconds: float  # the second: what every later epoch costs

    def scaled(self, factor: float) -> Calibration:
        """The same epochs on a machine ``factor`` times as fast (with :meth:`Machine.scaled`, a what-if plan)."""
        return replace(self, first_seconds=self.first_seconds / factor, epoch_seconds=self.epoch_seconds / factor)

    def matches(self, spec: Mapping[str, Any], batch: int) -> bool:
        return dict(spec) == dict(self.input) and batch == self.batch


@dataclass(frozen=True)
class Rung:
    """One step of rule 2's ladder: the scale the model sees the images at, and the median image's size there."""

    scale: float  # the largest scale at which the median image fits ``size`` (at most 1; 6 decimals)
    size: tuple[int, int]  # (height, width): the median image's sides at the rung's scale, rounded up to the stride

    @property
    def pixels(self) -> int:
        return self.size[0] * self.size[1]

    def show(self) -> str:
        return f"scale {self.scale:.2f} ({self.size[0]}x{self.size[1]})"


def _side(value: float) -> int:
    """A side of the model's input: ``value`` rounded up to the encoder's stride, at least one stride."""
    return max(STRIDE, round_up(math.ceil(value - 1e-9)))


def _median(data: DataPrint) -> tuple[float, float]:
    return data.height[1], data.width[1]


def _scale_of(size: Sequence[int], median: Sequence[float]) -> float:
    """The largest scale (at most 1, 6 decimals) at which the median image fits ``size``: the scale a crop spec
    carries, so that the shrunk image's limiting side lands on the stride (rounded up in the last decimal, so it is
    never below the scale the size was made for)."""
    fits = min(int(size[0]) / median[0], int(size[1]) / median[1])
    return min(1.0, math.ceil(fits * 1e6 - 1e-6) / 1e6)


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
    """Rule 1: the smallest scale that keeps every common class's typical width (the median local thickness over
    its pixels) at least ``finest`` px, and why."""
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
            f"half of {bound.name}'s pixels lie where it is {width:.1f} px thick or less at full resolution (under "
            f"{finest} px): no shrinking"
        )
    return need, (
        f"{bound.name}'s typical width (half its pixels lie where it is thinner), {width:.1f} px, reaches "
        f"{finest} px at scale {need:.2f}: the thinnest common class bounds the scale"
    )


def ladder(data: DataPrint, floor: float | None) -> tuple[Rung, ...]:
    """Rule 2's candidate scales, largest first: full resolution, then each ``RUNG`` below the one above, down to
    ``floor`` (the last rung), or without a floor (crops off) down to the scale that brings the median image's short
    side to one stride. Rungs that round to the same size, or to fewer than ``MERGE`` times fewer pixels than the
    rung above, are merged into it (the floor's rung is kept wherever its size differs). With a floor, no rung
    shrinks the median image's short side below ``MIN_CROP`` either."""
    median = _median(data)
    bottom = min(1.0, STRIDE / min(median) if floor is None else max(floor, MIN_CROP / min(median)))
    rungs: list[Rung] = []
    step = 0
    while True:
        nominal = max(RUNG**step, bottom)
        size = (_side(median[0] * nominal), _side(median[1] * nominal))
        rung = Rung(_scale_of(size, median), size)
        if not rungs or _steps_down(rung, rungs[-1], last=nominal == bottom):
            rungs.append(rung)
        if nominal <= bottom:
            return tuple(rungs)
        step += 1


def _steps_down(rung: Rung, above: Rung, last: bool) -> bool:
    """Whether ``rung`` is a step of its own below ``above``: a smaller scale and size, with MERGE times fewer
    pixels (the last rung, the floor, needs only a smaller size)."""
    smaller = rung.scale < above.scale and rung.size != above.size
    return smaller and (last or rung.pixels * MERGE <= above.pixels)


def input_scale(data: DataPrint, spec: Mapping[str, Any]) -> float:
    """The scale a ``train.input`` spec trains at: a crop spec's ``scale``; for whole images, the largest scale at
    which the median image fits its size (at most 1), as :func:`ladder` reports a rung's."""
    if spec.get("policy") == "crop":
        return float(spec.get("scale", 1.0))
    return _scale_of(spec["size"], _median(data)) if spec.get("size") else 1.0


def _passes(machine: Machine, images: int, size: Sequence[int], val_images: int, batch: int | None,
            full: Sequence[int] | None = None) -> tuple[float, float]:  # fmt: skip
    """(train, val) seconds of one epoch: the train images at ``size`` (one image or crop each), then val: whole
    images at ``size``, or, with ``full`` (crops), every window of each image at that size."""
    train_s, eval_s = machine.seconds_per_image(int(size[0]), int(size[1]), batch)
    windows = 1 if full is None else math.prod(len(window_starts(int(f), int(w), OVERLAP))
                                               for f, w in zip(full, size, strict=True))  # fmt: skip
    return images * train_s, val_images * windows * eval_s


def _shrunk(median: Sequence[float], scale: float) -> tuple[int, int]:
    """The median image shrunk by ``scale`` as training shrinks it (rounded), each side then rounded up to the
    stride: what crops and windows are cut from."""
    height, width = scaled_size(median[0], median[1], scale)  # type: ignore[arg-type]
    return round_up(height), round_up(width)


def _epoch_seconds(machine: Machine, images: int, spec: Mapping[str, Any], val_images: int, batch: int | None,
                   median: Sequence[float]) -> float:  # fmt: skip
    """One epoch at the ``train.input`` spec: its crops per image from each train image, then the val pass."""
    cropped = spec["policy"] == "crop"
    windowed = _shrunk(median, float(spec.get("scale", 1.0))) if cropped else None
    train, val = _passes(machine, images, spec["size"] or _shrunk(median, 1.0), val_images, batch, windowed)
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
    val_passes: int = 1,
) -> Plan:
    """The plan for training on ``data`` on ``machine`` in ``budget_minutes`` (validation passes included), with
    ``pinned`` (dotted params keys set in params) kept as given, and the probe's times scaled by ``calibration``
    (where its settings are the planned ones, its epoch time sets the epochs); without ``crops`` the input is
    always the whole image. ``finest``: the narrowest object the model resolves (:func:`finest_width`);
    ``val_passes``: how many models each val pass scores (2: the weights and their moving average)."""
    pinned = dict(pinned or {})
    scored = val_images * val_passes  # the val images an epoch's val pass scores
    budget = budget_minutes * 60
    median = _median(data)
    full = full_size(data)
    floor, floor_reason = scale_floor(data, finest)
    decisions: list[Decision] = []
    bound, notes = _bound(data, (floor, floor_reason), finest, crops)
    if calibration is not None:
        probed = _epoch_seconds(machine, data.images, calibration.input, scored, calibration.batch, median)
        machine = replace(machine, overhead=calibration.epoch_seconds / probed)
        notes.append(
            f"real epochs at {_show_input(calibration.input)}, batch {calibration.batch} took "
            f"{calibration.epoch_seconds:.1f} s, {machine.overhead:.2f}x the probe's estimate (data loading, "
            "augmentation, the val pass's metrics, saves): every time is scaled by it"
        )

    # rule 2: size and policy
    if "train.input" in pinned:
        spec = dict(pinned["train.input"])
        decisions.append(Decision("train.input", spec, "", pinned=True))
    else:
        rungs = ladder(data, floor if crops else None)
        spec, reason, rung_notes = _input(data, machine, budget, scored, rungs, bound, crops)
        decisions.append(Decision("train.input", spec, reason))
        notes += rung_notes
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
    epoch = _epoch_seconds(machine, data.images, spec, scored, batch, median)
    startup, how = 0.0, "estimated"
    if calibration is not None and calibration.matches(spec, batch):
        epoch, how = calibration.epoch_seconds, "measured"
        startup = max(0.0, calibration.first_seconds - calibration.epoch_seconds)
    if "train.epochs" in pinned:
        epochs = int(pinned["train.epochs"])
        decisions.append(Decision("train.epochs", epochs, "", pinned=True))
    else:
        epochs = max(1, int((FILL * budget - startup) // epoch))
        # a whole image's train.input line counts passes at the fastest batch's estimated speed: say why this is lower
        counted = FILL * budget / _epoch_seconds(machine, data.images, spec, scored, None, median)
        decisions.append(
            Decision(
                "train.epochs",
                epochs,
                f"{FILL:.0%} of {budget_minutes:g} min / {epoch:.1f} s an epoch, {how} ({data.images} train images"
                + (f" x {spec['crops_per_image']} crops" if spec.get("crops_per_image", 1) > 1 else "")
                + f" at {size[0]}x{size[1]}, batch {batch}, then {val_images} val images"
                + (" scored twice: the weights and their average" if val_passes == 2 else "")
                + (f"; the first epoch's start-up {startup:.1f} s more)" if startup else ")")
                + (
                    f"; fewer than the {counted:.1f} passes in train.input's line, counted at the fastest batch's "
                    f"estimated speed: whole epochs at batch {batch}" + (", as measured" if how == "measured" else "")
                    if epochs < int(counted) and "train.input" not in pinned and not windowed
                    else ""
                ),
            )
        )

    if "train.rare_crops" in pinned:
        decisions.append(Decision("train.rare_crops", float(pinned["train.rare_crops"]), "", pinned=True))
    else:
        why = _RARE_WHY if windowed else "no crops: unused"
        decisions.append(Decision("train.rare_crops", round(RARE_CROPS, 3), why))
    if "train.augment" in pinned:
        decisions.append(Decision("train.augment", dict(pinned["train.augment"]), "", pinned=True))
    else:
        decisions.append(Decision("train.augment", *augment_policy(data, epochs * int(spec.get("crops_per_image", 1)))))
    estimated = (startup + epochs * epoch) / 60
    if estimated > budget_minutes * 1.1:
        notes.append(
            f"about {estimated:.1f} min, more than the {budget_minutes:g} min budget: "
            + ("the pinned values need it" if pinned else "one epoch at the smallest size already does")
        )
    return Plan(machine.kind, budget_minutes, round(estimated, 2), tuple(decisions), tuple(notes),
                json.loads(json.dumps(asdict(data))))  # fmt: skip


MEASURED_KEYS = ("train.input", "train.batch_size", "train.epochs")  # what needs the machine's speed
UNMEASURED_KEYS = ("train.input", "train.rare_crops", "train.augment")  # what :func:`unmeasured` plans for a classifier


def needs_measuring(auto: Sequence[str]) -> bool:
    """Whether planning ``auto`` needs the machine's speed (the lr follows a pinned batch, the crops' share a
    pinned input)."""
    return any(key in auto for key in MEASURED_KEYS)


def unmeasured(pinned: Mapping[str, Any], auto: Sequence[str], model: str, budget_minutes: float,
               data: DataPrint | None = None) -> Plan:  # fmt: skip
    """The plan where nothing needs measuring: the lr from a pinned batch (rule 4), the crops' share from a pinned
    input, a classifier's whole images (it pools over the image, so each is fed at its own size, uncropped), the
    augmentation from ``data`` (the train masks' fingerprint; None: a classifier's, rule 6). The same file on every
    machine."""
    cropped = dict(pinned.get("train.input") or {}).get("policy") == "crop"
    chosen = {
        "train.input": ({"size": None, "policy": "resize"}, "classification: each image whole at its own size (the "
                        "classifier pools over all of it)"),
        "train.rare_crops": (round(RARE_CROPS, 3), _RARE_WHY if cropped else "no crops: unused"),
        "train.augment": augment_policy(data, _passes_pinned(pinned)),
    }  # fmt: skip
    if "train.batch_size" in pinned:
        chosen["train.lr"] = _lr(int(pinned["train.batch_size"]))
    decisions = [Decision(key, value, "", pinned=True) for key, value in pinned.items()]
    decisions += [Decision(key, *chosen[key]) for key in auto]
    order = {key: at for at, key in enumerate(PLANNED_KEYS)}
    decisions.sort(key=lambda d: order[d.key])
    return Plan(f"not measured ({model})", budget_minutes, 0.0, tuple(decisions))


def augment_policy(data: DataPrint | None, passes: int | None = None) -> tuple[dict[str, Any], str]:
    """Rule 6: the augmentation policy (``train.augment``'s fields) for the train split's fingerprint (None: a
    classifier, no masks) and the ``passes`` training makes over the train images (None: not known, the whole set),
    with its reason."""
    vertical = [] if data is None else _sided(data, "row")
    horizontal = [] if data is None else _sided(data, "column")
    grouped = data is not None and data.groups is not None and data.images >= GROUP_IMAGES * data.groups
    if passes is not None and passes < FULL_AUGMENT_PASSES and not grouped:
        short = (f"{passes} passes over the train images, fewer than {FULL_AUGMENT_PASSES}: the model is still "
                 "fitting them, and augmentation beyond a left-right flip measured slower to train")  # fmt: skip
        if horizontal:
            return {"hflip": 0.0}, f"{short}; {_layout(horizontal, 'width', 'left')}: no left-right flips either"
        return {"hflip": 0.5}, f"{short}: left-right flips only"
    policy: dict[str, Any] = {"hflip": 0.5, "vflip": 0.5, "rotate": 180.0, **GEOMETRY, "saturation": 0.0,
                              **PHOTOMETRIC}  # fmt: skip
    g, p = GEOMETRY, PHOTOMETRIC
    common = (f"nnU-Net's set: zoom {g['scale'][0]:g}-{g['scale'][1]:g} and rotation at p {g['affine']:g}, "
              f"brightness x{1 - p['brightness']:g}-{1 + p['brightness']:g}, contrast x{1 - p['contrast']:g}-"
              f"{1 + p['contrast']:g} and gamma {p['gamma'][0]:g}-{p['gamma'][1]:g} at p {p['colour']:g} each, blur "
              f"at p {p['blur']:g}, noise at p {p['noise']:g}")  # fmt: skip
    if grouped:
        assert data is not None and data.groups is not None
        common = (f"the {data.images} train images come from {data.groups} group(s) of data.groups, "
                  f"{data.images / data.groups:.0f} images a group on average: frames of a group repeat their scene "
                  f"and the model is to serve groups it has not seen, so the whole set from the first pass (on CamVid "
                  f"by sequence: better under corruptions; on clean frames level with flips alone at 320x416, 0.02 "
                  f"below at full frames) whatever the passes ({passes}): "
                  f"{common}")  # fmt: skip
    elif passes is not None:
        common = f"{passes} passes over the train images, at least {FULL_AUGMENT_PASSES}: {common}"
    if data is None:
        policy |= {"vflip": 0.0, "rotate": TILT}
        return policy, (f"{common}; left-right flips, no vertical ones, rotations to {TILT:g} deg: a classifier has "
                        "no masks to tell which way up its images may be turned")  # fmt: skip
    reasons = []
    if vertical:
        policy["vflip"] = 0.0
        reasons.append(f"{_layout(vertical, 'height', 'top')}: up and down mean something, so no vertical flips")
    if horizontal:
        policy["hflip"] = 0.0
        reasons.append(f"{_layout(horizontal, 'width', 'left')}: no left-right flips")
    if vertical or horizontal:
        policy["rotate"] = TILT
        reasons.append(f"rotations only to a camera's tilt, {TILT:g} deg")
    else:
        reasons.append(f"no class keeps a side of the image (lies on average {LAYOUT_SHIFT:.0%} of a side off the "
                       f"middle, on that side in {LAYOUT_IMAGES:.0%} of its images): flips both ways, rotations to "
                       "180 deg")  # fmt: skip
    return policy, f"{common}; " + "; ".join(reasons)


def _sided(data: DataPrint, axis: str) -> list[tuple[str, float, float]]:
    """(name, mean position, share of its images on that side) of the classes with at least LAYOUT_SHARE of the
    labelled pixels whose pixels lie on average LAYOUT_SHIFT or more off the middle along ``axis`` (``row`` or
    ``column``), on that side in at least LAYOUT_IMAGES of the images that hold them; furthest first."""
    share = {"row": "above_share", "column": "left_share"}[axis]
    sided = []
    for c in data.classes:
        at, before = getattr(c, f"centre_{axis}"), getattr(c, share)
        if c.pixel_share < LAYOUT_SHARE or at is None or before is None or abs(at - 0.5) < LAYOUT_SHIFT:
            continue
        consistent = before if at < 0.5 else 1 - before
        if consistent >= LAYOUT_IMAGES:
            sided.append((c.name, float(at), float(consistent)))
    return sorted(sided, key=lambda item: -abs(item[1] - 0.5))


def _layout(sided: Sequence[tuple[str, float, float]], side: str, start: str) -> str:
    shown = ", ".join(f"{name} {at:.2f} ({on:.0%} of its images on that side)" for name, at, on in sided[:3])
    more = f" and {len(sided) - 3} more" if len(sided) > 3 else ""
    return f"classes keep to a side of the {side} (mean position from the {start}: {shown}{more})"


def _passes_pinned(pinned: Mapping[str, Any]) -> int | None:
    """The passes over the train images that pinned epochs (and crops per image) make; None: epochs not pinned."""
    if "train.epochs" not in pinned:
        return None
    return int(pinned["train.epochs"]) * int(dict(pinned.get("train.input") or {}).get("crops_per_image", 1))


def _lr(batch: int) -> tuple[float, str]:
    """Rule 4, with its reason."""
    why = f"{REFERENCE_LR:g} at batch {REFERENCE_BATCH}, x sqrt({batch}/{REFERENCE_BATCH})"
    return REFERENCE_LR * math.sqrt(batch / REFERENCE_BATCH), why


_RARE_WHY = "a third of the crops centred on a rare class present (nnU-Net)"


def _input(data: DataPrint, machine: Machine, budget: float, val_images: int, rungs: Sequence[Rung],
           bound: str, crops: bool) -> tuple[dict[str, Any], str, list[str]]:  # fmt: skip
    """Rule 2: the scale (:func:`_rung`), then at it the whole image (up to WHOLE_MAX_PIXELS, or with crops off),
    else crops. The spec, its reason, and notes for plan.md."""
    at, reason, notes = _rung(data, machine, budget, val_images, rungs, bound)
    rung, median = rungs[at], _median(data)
    if not crops or rung.pixels <= WHOLE_MAX_PIXELS:
        why = "crops are off" if not crops else f"at most {WHOLE_MAX_PIXELS:,} px: whole images beat crops there"
        policy = _whole_policy(median, rung.size) if at == 0 else "resize"  # below full resolution: resized
        sides = f"{rung.size[0]}x{rung.size[1]}"
        how = f"resized to {sides}" if at else {"pad": "padded to the stride", "resize": "as it is"}[policy]
        return {"size": list(rung.size), "policy": policy}, f"{reason}; the whole image, {how} ({why})", notes
    # crops of the image shrunk to the rung: half its side (at least MIN_CROP), several an epoch
    crop = tuple(min(side, max(MIN_CROP, side // 2 // STRIDE * STRIDE)) for side in rung.size)
    per_image, share = _crops_per_image(machine, data.images, crop, val_images, rung.size, budget)
    spec: dict[str, Any] = {"size": list(crop), "policy": "crop", "crops_per_image": per_image}
    if rung.scale < 1:
        spec["scale"] = rung.scale
    reason += (
        f"; {crop[0]}x{crop[1]} crops, half its side (over {WHOLE_MAX_PIXELS:,} px: crops beat whole images there), "
        f"scored by sliding windows; {per_image} from each image an epoch, so that validation takes {share:.0%} of it"
    )
    return spec, reason, notes


def _rung(data: DataPrint, machine: Machine, budget: float, val_images: int, rungs: Sequence[Rung],
          bound: str) -> tuple[int, str, list[str]]:  # fmt: skip
    """Rule 2's scale: the largest rung at which MIN_PASSES passes (the train images at its size, then a val pass:
    the same cost for whole images and crops) fit FILL of the budget, else the smallest. Its index, the reason, and
    notes for plan.md: the ladder, what the next larger rung would cost."""
    room = FILL * budget

    def passes(rung: Rung) -> float:  # how many fit the budget
        return room / sum(_passes(machine, data.images, rung.size, val_images, None))

    found = next((i for i, r in enumerate(rungs) if passes(r) >= MIN_PASSES), None)
    at = len(rungs) - 1 if found is None else found
    rung = rungs[at]
    passes_wanted = f"{MIN_PASSES} passes (train images, then val) fit in {FILL:.0%} of the budget"
    if found is None and len(rungs) == 1:
        chose = f"{rung.show()}, the only step, leaves {passes(rung):.1f} passes, fewer than {MIN_PASSES}"
    elif found is None:
        chose = f"at no step down to it do {passes_wanted}: the smallest, {rung.show()}, {passes(rung):.1f} passes"
    elif len(rungs) == 1:
        chose = f"{rung.show()}, the only step, where {passes_wanted}: {passes(rung):.1f} fit"
    else:
        chose = (f"{rung.show()} is the largest of {len(rungs)} steps down to it (each side ~16% shorter a step) "
                 f"at which {passes_wanted}: {passes(rung):.1f} fit")  # fmt: skip
    notes = ["the ladder of scales: " + ", ".join(f"{r.scale:.2f} ({r.size[0]}x{r.size[1]})" for r in rungs)]
    if at == 0:
        notes.append("the chosen scale is full resolution: no larger step")
    else:
        up = rungs[at - 1]
        notes.append(
            f"{up.show()}, the next step up, would need a budget of {MIN_PASSES * room / passes(up) / FILL / 60:.1f} "
            f"min ({MIN_PASSES} passes in {FILL:.0%} of it); {passes(up):.1f} fit in {FILL:.0%} of this one"
        )
    if found is None:
        notes.append(
            f"even the smallest step, {rung.show()}, leaves only {passes(rung):.1f} passes in {FILL:.0%} of the "
            f"budget, fewer than the {MIN_PASSES} wanted: a longer budget or a faster machine would train it better"
        )
    return at, f"{bound}; {chose}", notes


def _bound(data: DataPrint, floor: tuple[float, str], finest: int, crops: bool) -> tuple[str, list[str]]:
    """What bounds the ladder from below, in words for the input's reason, and the notes for plan.md: the scale
    floor (rule 1), the short side's MIN_CROP where that is higher, or with crops off 32 px sides."""
    scale, why = floor
    notes = [f"scale floor {scale:.2f} ({finest} px, the decoder's finest stride): {why}"]
    if not crops:
        notes[0] += f"; crops are off (plan.crops: false), so the scale may go below it, down to {STRIDE} px sides"
        return f"no floor: crops are off (plan.crops: false), so the scale may go down to {STRIDE} px sides", notes
    bound, short = f"floor: {why.split(':')[0]}", min(_median(data))
    if MIN_CROP / short > scale:
        at = "full resolution only" if short <= MIN_CROP else f"down to scale {MIN_CROP / short:.2f}"
        notes.append(f"the images' short side stays at least {MIN_CROP} px (a 4x4 bottleneck at stride 32, as "
                     f"nnU-Net bounds it): {at}")  # fmt: skip
        bound += f"; {notes[-1]}"
    return bound, notes


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
