"""The planner's rules on known fingerprints and machines: the thinnest common class bounds the scale, the cost
model is continuous in pixels, the ladder of scales runs from full resolution to that floor, the scale is the
largest rung that leaves the wanted passes (whole images up to a size, crops above it), the batch is the smallest
near the peak, the learning rate follows the batch, the epochs fill the budget, and pinned values stay.
(test_planning_scaling.py checks how the plan moves with the machine's speed and the budget.)"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import replace

import pytest
import torch

from visionflow.handoffs import PlanFile
from visionflow.planning.fingerprint import ClassPrint, DataPrint
from visionflow.planning.rules import (
    FILL,
    MERGE,
    MIN_PASSES,
    PLANNED_KEYS,
    RUNG,
    WHOLE_MAX_PIXELS,
    Calibration,
    Machine,
    Rate,
    Rung,
    finest_width,
    full_size,
    input_scale,
    ladder,
    needs_measuring,
    plan,
    scale_floor,
    unmeasured,
)


def data(size: int | tuple[int, int], widths: dict[str, float], images: int = 200,
         shares: dict[str, float] | None = None) -> DataPrint:  # fmt: skip
    """A fingerprint of ``images`` images of ``size`` (a side, or height and width) whose classes' typical objects
    are ``widths`` px wide."""
    height, width = (size, size) if isinstance(size, int) else size
    shares = shares or {}
    classes = tuple(
        ClassPrint(name, 1 / len(widths), shares.get(name, 0.5), 2.0, width * 0.6, width, width)
        for name, width in widths.items()
    )
    return DataPrint(images, (height, height, height), (width, width, width), 0.0, classes)


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


def test_the_cost_model_is_continuous_and_never_falls_with_the_pixels() -> None:
    probed = Machine("cpu: test", (Rate(128, 128, 4, 50.0, 200.0), Rate(128, 128, 8, 60.0, 220.0),
                                   Rate(192, 240, 4, 20.0, 90.0), Rate(384, 480, 4, 6.0, 30.0)))  # fmt: skip
    assert probed.seconds_per_image(384, 480) == pytest.approx((1 / 6, 1 / 30)), "a measured size: as measured"
    assert probed.seconds_per_image(128, 128) == pytest.approx((1 / 60, 1 / 220)), "the best batch measured there"
    assert probed.seconds_per_image(128, 128, batch=4) == pytest.approx((1 / 50, 1 / 200)), "or the given batch"
    between = probed.seconds_per_image(288, 320)  # 92,160 px: halfway from 46,080 to 184,320 in log pixels
    assert between == pytest.approx((math.sqrt(1 / 20 * 1 / 6), math.sqrt(1 / 90 * 1 / 30))), "log-log interpolation"
    assert probed.seconds_per_image(768, 960)[0] == pytest.approx(4 / 6), "beyond the probes: cost grows with pixels"
    assert probed.seconds_per_image(64, 64)[0] == pytest.approx(1 / 60 / 4)
    before = probed.seconds_per_image(100, 50)
    for width in range(51, 5000):  # 100 px high: 5,000 to 500,000 px in steps of 100
        now = probed.seconds_per_image(100, width)
        for was, cost in zip(before, now, strict=True):
            grew = math.log(cost / was) / math.log(width / (width - 1))
            assert 0 <= grew <= 1.5, f"{width}: the cost jumps or falls ({grew:.2f}x the pixels' change)"
        before = now
    noisy = Machine("cuda: test", (Rate(64, 64, 8, 100.0, 400.0), Rate(128, 128, 8, 200.0, 800.0)))
    assert noisy.seconds_per_image(128, 128)[0] == pytest.approx(1 / 100), "a larger image never costs less"
    slowed = replace(probed, overhead=1.5)
    assert slowed.seconds_per_image(200, 200)[0] == pytest.approx(1.5 * probed.seconds_per_image(200, 200)[0])
    thrice = probed.scaled(3)
    assert thrice.seconds_per_image(200, 300)[1] == pytest.approx(probed.seconds_per_image(200, 300)[1] / 3)
    assert thrice.rates[0].train_images_per_second == 150.0 and "x3 speed" in thrice.kind


def test_the_ladder_steps_down_from_full_resolution_to_the_floor() -> None:
    camvid = data((360, 480), {"road": 200, "pole": 4.5})  # floor 2 / 4.5 = 0.44
    floor = scale_floor(camvid)[0]
    rungs = ladder(camvid, floor)
    assert [r.size for r in rungs] == [(384, 480), (320, 416), (256, 352), (224, 288), (192, 256), (160, 224)]
    assert [r.scale for r in rungs] == [1.0, 0.866667, 0.711112, 0.6, 0.533334, 0.444445], "each fits the median image"
    assert floor <= rungs[-1].scale < floor + 0.01 and rungs[1].scale >= RUNG, "the floor is the last rung"
    assert [r.size for r in ladder(camvid, 1.0)] == [(384, 480)], "a floor of 1: full resolution only"
    assert MERGE**0.75 > 1.1, "where cost grows as pixels**0.75 (CPU probes at small sizes), a rung costs >10% less"
    below = ladder(camvid, None)  # crops off: down to 32 px sides
    assert below[: len(rungs) - 1] == rungs[:-1] and below[-1].size[0] == 32 and below[-1].scale < floor
    for height, width, floor in itertools.product((32, 50, 64, 100, 200, 360, 384, 500, 720, 1024, 3000),
                                                  (1, 1.34, 2, 6), (None, 0.05, 0.3, 0.45, 0.9)):  # fmt: skip
        median = (height, round(height * width))
        rungs = ladder(data(median, {"road": 200}), floor)
        assert rungs[0] == Rung(1.0, full_size(data(median, {"road": 200}))), median
        for above, rung in itertools.pairwise(rungs):
            assert rung.scale < above.scale and all(a >= b for a, b in zip(above.size, rung.size, strict=True))
            assert rung is rungs[-1] or rung.pixels * MERGE <= above.pixels, f"{median}: {above} -> {rung} merged"
        for rung in rungs:  # the image shrunk by the rung's scale fits its size
            assert all(round(m * rung.scale) <= side for m, side in zip(median, rung.size, strict=True)), rung
        last = rungs[-1]
        if floor is None:
            assert last.size[0] == 32 or min(median) <= 32, f"{median}: crops off, down to 32 px sides"
        else:  # the floor, or where that is lower, the scale that leaves the short side MIN_CROP (128 px)
            bottom = min(1, max(floor, 128 / min(median)))
            assert last.scale >= floor and last.size == tuple(-(-math.ceil(m * bottom) // 32) * 32 for m in median)


def test_small_images_with_time_to_spare_train_whole_at_full_resolution() -> None:
    made = plan(data(64, {"disc": 20, "star": 12}), machine(5e6), budget_minutes=2, val_images=48)
    assert made.value("train.input") == {"size": [64, 64], "policy": "resize"}
    epochs = made.value("train.epochs")
    assert epochs >= MIN_PASSES and made.estimated_minutes <= 2, made
    assert made.value("train.batch_size") == 8, "the smallest batch within 90% of the peak (0.95 at 8)"
    assert made.value("train.lr") == pytest.approx(3e-3 * math.sqrt(8 / 16), rel=1e-4)
    assert "the chosen scale is full resolution: no larger step" in made.notes


def test_the_epochs_line_says_why_it_counts_fewer_than_the_input_lines_passes() -> None:
    made = plan(data(64, {"disc": 20, "star": 12}), machine(5e6), budget_minutes=2, val_images=48)
    why = {d.key: d.reason for d in made.decisions}
    counted = float(re.search(rf"where {MIN_PASSES} passes .*: ([0-9.]+) fit", why["train.input"]).group(1))
    assert made.value("train.epochs") < int(counted), "batch 8 runs at 0.95 of the fastest batch's speed"
    assert f"fewer than the {counted:.1f} passes in train.input's line" in why["train.epochs"], why
    assert "at batch 8" in why["train.epochs"]


def test_images_no_larger_than_the_smallest_crop_stay_whole_when_time_is_short() -> None:
    shapes = data(64, {"disc": 20, "star": 12})  # floor 2 / 12, but a 64 px side is under MIN_CROP already
    assert [r.size for r in ladder(shapes, scale_floor(shapes)[0])] == [(64, 64)]
    made = plan(shapes, machine(2e4), budget_minutes=2, val_images=48)
    assert made.value("train.input") == {"size": [64, 64], "policy": "resize"}, made.table()
    assert made.value("train.epochs") < MIN_PASSES and "the only step, leaves" in made.table()
    assert any(f"fewer than the {MIN_PASSES} wanted" in note for note in made.notes), made.notes
    assert any("short side stays at least 128 px" in note for note in made.notes), made.notes
    whole = plan(shapes, machine(2e4), budget_minutes=2, val_images=48, crops=False).value("train.input")
    assert whole == {"size": [32, 32], "policy": "resize"}, "crops off: down to 32 px sides"


def test_less_time_steps_down_the_ladder_to_the_floor_but_not_below() -> None:
    roads = data(1024, {"road": 300, "car": 64})  # floor 2 / 64, but the short side stays at least 128 px
    floor = scale_floor(roads)[0]
    scales = []
    for speed in (5e6, 1.5e6, 5e5, 1e3):
        made = plan(roads, machine(speed), budget_minutes=10, val_images=50)
        spec = made.value("train.input")
        scales.append(input_scale(roads, spec))
        assert scales[-1] >= floor and (made.estimated_minutes <= 10 or speed == 1e3), made.table()
        whole = round(1024 * scales[-1] / 32 - 1e-6) ** 2 * 32**2 <= WHOLE_MAX_PIXELS
        assert spec["policy"] == ("resize" if whole else "crop"), "whole images up to a CamVid frame, crops above"
    assert scales == sorted(scales, reverse=True) and len(set(scales)) == 4, "less speed, a smaller scale"
    assert scales[0] == pytest.approx(864 / 1024, abs=1e-4) and scales[1] == 0.4375, scales
    slowest = plan(roads, machine(1e3), budget_minutes=10, val_images=50)
    assert slowest.value("train.input") == {"size": [128, 128], "policy": "resize"}, "the last step: 128 px"
    assert slowest.value("train.epochs") < MIN_PASSES and any("fewer than" in note for note in slowest.notes)


def test_whole_images_up_to_a_camvid_frame_and_crops_above_it_at_full_resolution() -> None:
    frames = plan(data((360, 480), {"road": 200, "car": 40}), machine(5e6), 10, 50).value("train.input")
    assert frames == {"size": [384, 480], "policy": "pad"}, "360 px high: padded to the stride, whole"
    large = plan(data(512, {"road": 200, "car": 40}), machine(5e6), 10, 50)
    spec = large.value("train.input")
    assert spec["policy"] == "crop" and spec["size"] == [256, 256] and "scale" not in spec, large.table()
    assert 512 * 512 > WHOLE_MAX_PIXELS >= 384 * 480 and "crops beat whole images" in large.table()


def test_thin_structures_on_large_images_get_crops_no_smaller_than_the_floor_and_the_budget_holds() -> None:
    wires = data(1024, {"plate": 200, "wire": 3.5, "rivet": 7})  # floor 2 / 3.5 = 0.57: 608 px
    made = plan(wires, machine(1e6), budget_minutes=10, val_images=40)  # no step fits MIN_PASSES passes: the floor
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
    assert "wire" in made.notes[0] and "wire's typical width" in made.table()
    fast = plan(wires, machine(5e6), 10, 40).value("train.input")
    assert fast["policy"] == "crop" and fast["scale"] == pytest.approx(864 / 1024, abs=1e-4), "faster: a larger scale"
    whole = plan(wires, machine(1e6), 10, 40, crops=False)
    spec = whole.value("train.input")
    assert spec["policy"] == "resize" and 32 <= spec["size"][0] < 608, "whole images, shrunk below the floor"
    assert whole.value("train.epochs") >= 0.9 * MIN_PASSES and whole.estimated_minutes <= 10, whole.table()
    assert "plan.crops: false" in whole.table()
    same = plan(wires, machine(5e6), 10, 40, crops=False).value("train.input")
    assert same == {"size": [864, 864], "policy": "resize"}, "the scale does not depend on the policy"
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
    auto = ["train.lr", "train.rare_crops", "train.augment"]
    made = unmeasured(pinned, auto, "Unet-resnet18", 2.0, data(64, {"disc": 20}))
    assert made.machine == "not measured (Unet-resnet18)" and [d.key for d in made.decisions] == list(PLANNED_KEYS)
    augment = next(d for d in made.decisions if d.key == "train.augment")  # needs only the fingerprint
    assert augment.value == {"hflip": 0.5} and "3 passes over the train images, fewer than 40" in augment.reason
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

    large = data(512, {"road": 200, "car": 40})  # four times slower than probed: the scale falls
    probed = plan(large, machine(5e6), budget_minutes=10, val_images=50)
    spec, batch, epoch = probed.value("train.input"), probed.value("train.batch_size"), probe_epoch(probed)
    slow = Calibration(spec, batch, first_seconds=epoch * 4, epoch_seconds=epoch * 4)
    shrunk = plan(large, machine(5e6), budget_minutes=10, val_images=50, calibration=slow)
    assert input_scale(large, shrunk.value("train.input")) < input_scale(large, spec), shrunk.table()
    assert not slow.matches(shrunk.value("train.input"), shrunk.value("train.batch_size"))
    assert shrunk.estimated_minutes <= 10 and any("4.00x" in note for note in shrunk.notes), shrunk.notes


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
