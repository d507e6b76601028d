"""The planner's rules on known fingerprints and machines: the thinnest common class bounds the scale, the size
is the largest whole image that leaves the target epochs (else crops), the batch is the smallest near the peak,
the learning rate follows the batch, the epochs fill the budget, and pinned values stay."""

from __future__ import annotations

import math

import pytest
import torch

from visionflow.handoffs import PlanFile
from visionflow.planning.fingerprint import ClassPrint, DataPrint
from visionflow.planning.rules import (
    FILL,
    PLANNED_KEYS,
    TARGET_EPOCHS,
    Calibration,
    Machine,
    Rate,
    finest_width,
    needs_measuring,
    plan,
    scale_floor,
    unmeasured,
)


def data(size: int, widths: dict[str, float], images: int = 200, shares: dict[str, float] | None = None) -> DataPrint:
    shares = shares or {}
    classes = tuple(
        ClassPrint(name, 1 / len(widths), shares.get(name, 0.5), 2.0, width * 0.6, width, width)
        for name, width in widths.items()
    )
    return DataPrint(images, (size, size, size), (size, size, size), 0.0, classes)


def machine(pixels_per_second: float, batches: dict[int, float] | None = None) -> Machine:
    """Cost linear in pixels; ``batches`` scales the speed per batch (1.0: the peak)."""
    batches = batches or {2: 0.6, 4: 0.85, 8: 0.95, 16: 1.0}
    rates = tuple(
        Rate(side, side, batch, pixels_per_second * share / side**2, 3 * pixels_per_second / side**2)
        for side in (64, 256, 1024)
        for batch, share in batches.items()
    )
    return Machine("cpu: test", rates)


def test_the_thinnest_common_class_bounds_the_scale_by_the_decoders_finest_stride() -> None:
    street = data(512, {"road": 200, "pole": 16, "speck": 1}, shares={"speck": 0.005})
    floor, why = scale_floor(street, finest_width("Unet"))
    assert floor == pytest.approx(2 / 16) and "pole" in why, "a class in under 1% of the images does not bound it"
    assert scale_floor(street, finest_width("FPN"))[0] == pytest.approx(4 / 16), "a stride-4 head: 4 px"
    assert scale_floor(street, finest_width("PSPNet"))[0] == pytest.approx(8 / 16), "unlisted decoders: 8 px"
    floor, why = scale_floor(data(512, {"road": 200, "wire": 1.5}), finest_width("Unet"))
    assert floor == 1.0 and "wire" in why and "no shrinking" in why


def test_small_images_with_time_to_spare_train_whole_at_full_resolution() -> None:
    made = plan(data(64, {"disc": 20, "star": 12}), machine(5e6), budget_minutes=2, val_images=48)
    assert made.value("train.input") == {"size": [64, 64], "policy": "resize"}
    epochs = made.value("train.epochs")
    assert epochs >= TARGET_EPOCHS and made.estimated_minutes <= 2, made
    assert made.value("train.batch_size") == 8, "the smallest batch within 90% of the peak (0.95 at 8)"
    assert made.value("train.lr") == pytest.approx(3e-3 * math.sqrt(8 / 16), rel=1e-4)


def test_images_no_larger_than_the_smallest_crop_stay_whole_when_time_is_short() -> None:
    made = plan(data(64, {"disc": 20, "star": 12}), machine(2e4), budget_minutes=2, val_images=48)
    assert made.value("train.input") == {"size": [64, 64], "policy": "resize"}, made.table()
    assert made.value("train.epochs") < TARGET_EPOCHS and "no larger than the smallest crop" in made.table()


def test_a_tight_budget_shrinks_the_image_down_to_the_floor_but_not_below() -> None:
    fast = plan(data(1024, {"road": 300, "car": 64}), machine(5e6), budget_minutes=10, val_images=50)
    size = fast.value("train.input")["size"]
    assert fast.value("train.input")["policy"] == "resize" and 1024 * 8 / 64 <= size[0] < 1024, fast.table()
    slower = plan(data(1024, {"road": 300, "car": 64}), machine(1.5e6), budget_minutes=10, val_images=50)
    assert slower.value("train.input")["size"][0] < size[0], "less speed, smaller images"
    assert fast.estimated_minutes <= 10 and slower.estimated_minutes <= 10
    assert slower.value("train.input")["size"][0] >= 128, "never below the 8 px floor (car: 64 px -> 0.125)"


def test_thin_structures_on_large_images_get_crops_at_the_floor_and_the_budget_holds() -> None:
    wires = data(1024, {"plate": 200, "wire": 3.5, "rivet": 7})  # floors: whole images 1 (8 px), crops 0.57 (2 px)
    made = plan(wires, machine(1e6), budget_minutes=10, val_images=40)
    spec = made.value("train.input")
    assert spec["policy"] == "crop" and spec["scale"] == pytest.approx(608 / 1024, abs=1e-4), made.table()
    assert spec["size"] == [288, 288], "half the side of the image shrunk to the floor (608 px)"
    assert spec["crops_per_image"] == 4, "4 crops of each image an epoch keep the val pass to 25% or less"
    share = int(made.decisions[0].reason.split("validation takes ")[1].split("%")[0])
    assert 10 <= share <= 25, made.table()
    more_val = plan(wires, machine(1e6), 10, val_images=120)
    assert more_val.value("train.input")["crops_per_image"] > 4, "a longer val pass, more crops between passes"
    assert made.value("train.rare_crops") == pytest.approx(1 / 3, abs=1e-3)
    assert made.estimated_minutes <= 10 * 1.1 and made.value("train.epochs") >= 1
    assert "wire" in made.notes[0] and "crops at scale 0.5938" in made.table()
    fast = plan(wires, machine(5e6), 10, 40).value("train.input")
    assert fast["policy"] == "crop" and fast["scale"] == spec["scale"], "whole images never shrink below 8 px wires"
    whole = plan(wires, machine(1e6), 10, 40, crops=False)
    spec = whole.value("train.input")
    assert spec["policy"] == "resize" and 32 <= spec["size"][0] < 1024, "whole images, shrunk below the floor"
    assert whole.value("train.epochs") >= 0.9 * TARGET_EPOCHS and whole.estimated_minutes <= 10, whole.table()
    assert "plan.crops: false" in whole.table()
    full_res = plan(data(1024, {"plate": 200, "wire": 1.5}), machine(1e6), 10, 40).value("train.input")
    assert full_res["policy"] == "crop" and "scale" not in full_res and full_res["size"] == [512, 512]


def test_pinned_values_stay_and_the_rest_is_planned_around_them() -> None:
    pinned = {"train.epochs": 3, "train.batch_size": 4}
    made = plan(data(64, {"disc": 20}), machine(5e6), budget_minutes=2, val_images=48, pinned=pinned)
    decisions = {d.key: d for d in made.decisions}
    assert decisions["train.epochs"].pinned and decisions["train.epochs"].value == 3
    assert decisions["train.batch_size"].value == 4 and not decisions["train.lr"].pinned
    assert made.value("train.lr") == pytest.approx(3e-3 * math.sqrt(4 / 16), rel=1e-4), "the lr follows the batch"
    assert "pinned in params" in made.table()
    assert made == plan(data(64, {"disc": 20}), machine(5e6), budget_minutes=2, val_images=48, pinned=pinned)


def test_with_the_size_batch_and_epochs_pinned_nothing_is_measured() -> None:
    pinned = {"train.input": {"size": [128, 128], "policy": "crop"}, "train.batch_size": 4, "train.epochs": 3}
    assert needs_measuring(["train.lr", "train.rare_crops"]) is False and needs_measuring(["train.epochs"])
    made = unmeasured(pinned, ["train.lr", "train.rare_crops"], "Unet-resnet18", 2.0)
    assert made.machine == "not measured (Unet-resnet18)" and [d.key for d in made.decisions] == list(PLANNED_KEYS)
    assert made.value("train.lr") == pytest.approx(3e-3 * math.sqrt(4 / 16), rel=1e-4), "the lr follows the batch"
    assert "nnU-Net" in next(d.reason for d in made.decisions if d.key == "train.rare_crops"), "crops are pinned"


def test_real_epochs_scale_the_probe_and_set_the_epochs_where_they_were_timed() -> None:
    def probe_epoch(made: PlanFile) -> float:  # the probe's time of one epoch at the plan's settings
        return made.estimated_minutes * 60 / made.value("train.epochs")

    small = data(64, {"disc": 20, "star": 12})  # full resolution with time to spare: the settings stay
    probed = plan(small, machine(5e6), budget_minutes=2, val_images=48)
    spec, batch, epoch = probed.value("train.input"), probed.value("train.batch_size"), probe_epoch(probed)
    same = Calibration(spec, batch, first_seconds=epoch * 1.5 + 4, epoch_seconds=epoch * 1.5)
    timed = plan(small, machine(5e6), budget_minutes=2, val_images=48, calibration=same)
    assert same.matches(timed.value("train.input"), timed.value("train.batch_size")), timed.table()
    assert timed.value("train.epochs") == int((FILL * 120 - 4) // (epoch * 1.5)) < probed.value("train.epochs")
    assert "measured" in timed.table() and "start-up 4.0 s" in timed.table()
    assert timed.estimated_minutes <= FILL * 2, "the epochs leave the budget's last 5% to a busier host"
    assert (timed.estimated_minutes + epoch * 1.5 / 60) > FILL * 2, "and fill the rest: one more would not fit"

    large = data(512, {"road": 200, "car": 40})  # three times slower than probed: the images shrink
    probed = plan(large, machine(5e6), budget_minutes=10, val_images=50)
    spec, batch, epoch = probed.value("train.input"), probed.value("train.batch_size"), probe_epoch(probed)
    slow = Calibration(spec, batch, first_seconds=epoch * 3, epoch_seconds=epoch * 3)
    shrunk = plan(large, machine(5e6), budget_minutes=10, val_images=50, calibration=slow)
    assert shrunk.value("train.input")["size"][0] < spec["size"][0], shrunk.table()
    assert not slow.matches(shrunk.value("train.input"), shrunk.value("train.batch_size"))
    assert shrunk.estimated_minutes <= 10 and any("3.00x" in note for note in shrunk.notes), shrunk.notes


def test_the_machine_is_measured_through_the_training_step_and_named_by_kind() -> None:
    from visionflow.config import ModelConfig
    from visionflow.engine import Runtime
    from visionflow.planning.machine import machine_kind, measure

    runtime = Runtime(torch.device("cpu"))
    measured = measure(ModelConfig(encoder="tu-resnet10t"), "segmentation", 3, runtime, [(64, 64), (96, 128)], [2, 4])
    assert [(r.height, r.width, r.batch) for r in measured.rates] == [(64, 64, 2), (64, 64, 4), (96, 128, 2),
                                                                      (96, 128, 4)]  # fmt: skip
    assert all(r.train_images_per_second > 0 and r.eval_images_per_second > 0 for r in measured.rates)
    assert measured.kind == machine_kind(runtime.device, "fp32") and measured.kind.startswith("cpu: ")
    made = plan(data(64, {"disc": 20}), measured, budget_minutes=1, val_images=10)
    assert made.value("train.batch_size") in (2, 4) and made.estimated_minutes <= 1.1
