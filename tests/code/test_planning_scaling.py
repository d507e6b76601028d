"""How the plan's scale moves with the machine's speed and the budget, on realistic fingerprints and machines: it
never falls as either grows, a 10% change of either moves it at most one rung of the ladder, it never goes below
the scale floor while crops are on, and a machine 2.5x slower than the one that trained CamVid's full frames
plans a scale between them and the floor (whole images), not the floor's crops: the cliff of the first planner
(PLANNING.md, "Measured since the first planner") is gone.

The records are hand-built in the shape of ``benchmarks/results/plan_camvid.json`` and ``plan_wires.json`` (which
keep plans and scores, not the fingerprints and probe rates): CamVid's 367 train frames of 360x480, pole's typical
object 4.5 px wide (the plans' floor note), on a 2-core AMX Xeon whose probe measured 6.2 img/s at full frames and
batch 4 and whose real epochs took 1.40x the probe's estimate (87.4 s: 26 epochs in 40 min); the wires set's 96
images of 1024 px with 3 px wires; the built-in 64 px shapes (widths as the fingerprint measures them)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from visionflow.planning.fingerprint import ClassPrint, DataPrint
from visionflow.planning.rules import (
    MIN_PASSES,
    Machine,
    Rate,
    input_scale,
    ladder,
    plan,
    scale_floor,
)

STEP = 1.1  # a 10% change of the speed or the budget
FACTORS = [0.25 * STEP**i for i in range(30)]  # a quarter to four times (3.97)


def _class(name: str, pixel_share: float, image_share: float, width: float) -> ClassPrint:
    return ClassPrint(name, pixel_share, image_share, 1.0, width / 2, width, width)


def _rates(table: dict[tuple[int, int], tuple[dict[int, float], float]]) -> tuple[Rate, ...]:
    """(height, width) -> ({batch: train img/s}, eval img/s)."""
    return tuple(Rate(h, w, b, t, e) for (h, w), (by_batch, e) in table.items() for b, t in by_batch.items())


CAMVID = DataPrint(367, (360.0, 360.0, 360.0), (480.0, 480.0, 480.0), 0.02, (
    _class("sky", 0.16, 0.99, 180.0), _class("building", 0.24, 1.0, 120.0), _class("pole", 0.01, 0.99, 4.5),
    _class("road", 0.30, 1.0, 200.0), _class("sidewalk", 0.07, 0.98, 60.0), _class("tree", 0.11, 0.98, 70.0),
    _class("sign_symbol", 0.01, 0.8, 12.0), _class("fence", 0.02, 0.7, 20.0), _class("car", 0.05, 0.95, 40.0),
    _class("pedestrian", 0.007, 0.85, 14.0), _class("bicyclist", 0.005, 0.5, 25.0),
))  # fmt: skip
XEON = Machine("cpu: Xeon-like, 2 cores, bf16 units, bf16", _rates({  # the probe's sizes: full, half, MIN_CROP
    (384, 480): ({2: 5.5, 4: 6.2, 8: 6.0, 16: 5.9}, 31.6),
    (192, 240): ({2: 19.0, 4: 22.5, 8: 24.0, 16: 24.5}, 120.0),
    (128, 128): ({2: 40.0, 4: 48.0, 8: 52.0, 16: 53.0}, 250.0),
}), overhead=1.40)  # fmt: skip
WIRES = DataPrint(96, (1024.0,) * 3, (1024.0,) * 3, 0.0, (
    _class("background", 0.80, 1.0, 150.0), _class("plate", 0.15, 0.95, 200.0), _class("wire", 0.03, 1.0, 3.0),
    _class("rivet", 0.02, 0.9, 7.0),
))  # fmt: skip
WIRES_XEON = Machine("cpu: Xeon-like, 2 cores, bf16 units, bf16", _rates({
    (1024, 1024): ({2: 0.95}, 3.4),
    (512, 512): ({2: 4.1, 4: 4.0, 8: 3.9}, 14.0),
    (128, 128): ({2: 26.0, 4: 29.6, 8: 29.0, 16: 28.5}, 110.0),
}))  # fmt: skip
SHAPES = DataPrint(192, (64.0,) * 3, (64.0,) * 3, 0.0, (
    _class("background", 0.82, 1.0, 77.7), _class("disc", 0.065, 0.59, 21.6), _class("square", 0.037, 0.52, 17.1),
    _class("triangle", 0.025, 0.54, 12.0), _class("cross", 0.044, 0.57, 12.65), _class("star", 0.007, 0.2, 10.2),
))  # fmt: skip
SHAPES_XEON = Machine("cpu: Xeon-like", _rates({(64, 64): ({2: 150.0, 4: 220.0, 8: 260.0, 16: 270.0}, 900.0)}))

# (name, fingerprint, machine, budget in minutes, val images): the budgets the benchmarks ran
CASES = [("camvid", CAMVID, XEON, 40.0, 101), ("wires", WIRES, WIRES_XEON, 10.0, 24),
         ("shapes", SHAPES, SHAPES_XEON, 2.0, 48)]  # fmt: skip


def _rung(data: DataPrint, machine: Machine, budget: float, val_images: int, crops: bool = True) -> int:
    """The index, in the ladder of ``data`` (0: full resolution), of the scale planned."""
    floor = scale_floor(data)[0]
    scales = [r.scale for r in ladder(data, floor if crops else None)]
    made = plan(data, machine, budget, val_images, crops=crops)
    scale = input_scale(data, made.value("train.input"))
    assert scale in scales, f"{made.value('train.input')}: scale {scale} is no rung of {scales}"
    return scales.index(scale)


def _grid(data: DataPrint, machine: Machine, budget: float, val_images: int) -> Iterator[tuple[int, int, int]]:
    """(speed step, budget step, rung) over FACTORS x FACTORS."""
    for (i, speed), (j, share) in itertools.product(enumerate(FACTORS), enumerate(FACTORS)):
        yield i, j, _rung(data, machine.scaled(speed), budget * share, val_images)


@pytest.mark.parametrize(("name", "data", "machine", "budget", "val_images"), CASES, ids=[c[0] for c in CASES])
def test_the_scale_never_falls_and_a_10_percent_change_moves_it_at_most_one_rung(
    name: str, data: DataPrint, machine: Machine, budget: float, val_images: int
) -> None:
    rungs = {(i, j): rung for i, j, rung in _grid(data, machine, budget, val_images)}
    for (i, j), rung in rungs.items():
        for faster in ((i + 1, j), (i, j + 1)):  # 10% more speed, 10% more budget
            if faster in rungs:
                assert rungs[faster] <= rung, f"{name} at {FACTORS[i]:.2f}x, {FACTORS[j]:.2f}x budget: it fell"
                assert rung - rungs[faster] <= 1, f"{name} at {FACTORS[i]:.2f}x, {FACTORS[j]:.2f}x: 10% skips a rung"
    used = sorted(set(rungs.values()))
    assert used == list(range(used[0], used[-1] + 1)), f"{name}: every rung between is planned somewhere"
    if name != "shapes":  # a 16x range of speed and of budget crosses several rungs of the larger images
        assert len(used) >= 3, f"{name}: {used}"


@pytest.mark.parametrize(("name", "data", "machine", "budget", "val_images"), CASES, ids=[c[0] for c in CASES])
def test_with_crops_on_the_scale_never_goes_below_the_floor(
    name: str, data: DataPrint, machine: Machine, budget: float, val_images: int
) -> None:
    floor = scale_floor(data)[0]
    for speed, share in itertools.product(FACTORS[::3], FACTORS[::3]):
        for slower in (1, 1 / 50):  # and far slower machines, where nothing fits the wanted passes
            made = plan(data, machine.scaled(speed * slower), budget * share, val_images)
            assert input_scale(data, made.value("train.input")) >= floor, f"{name}: {made.table()}"
    if min(data.height[1], data.width[1]) * floor > 32:  # crops off: the scale may go below it, to 32 px sides
        whole = plan(data, machine.scaled(1 / 200), budget, val_images, crops=False).value("train.input")
        assert whole["policy"] == "resize" and input_scale(data, whole) < floor, f"{name}: {whole}"


def test_a_machine_2_5x_slower_plans_a_smaller_whole_image_not_the_floors_crops() -> None:
    xeon = plan(CAMVID, XEON, 40, 101)  # the measured plan: full frames, 26 epochs (val .617)
    assert xeon.value("train.input") == {"size": [384, 480], "policy": "pad"}, xeon.table()
    assert xeon.value("train.epochs") == 26 and xeon.value("train.batch_size") == 4
    floor = scale_floor(CAMVID)[0]
    assert floor == pytest.approx(2 / 4.5), "pole, 4.5 px wide, reaches the U-Net's 2 px at 0.44"
    epyc = plan(CAMVID, XEON.scaled(1 / 2.5), 40, 101)  # the AMD EPYC: 2.4 img/s at full frames, not 6.2
    spec = epyc.value("train.input")
    scale = input_scale(CAMVID, spec)
    assert floor + 0.05 < scale < 1 and spec["policy"] == "resize", f"the cliff: {epyc.table()}"
    assert epyc.value("train.epochs") >= 0.9 * MIN_PASSES, "about the wanted passes, not 61 epochs of crops"
    assert any("the next step up, would need" in note for note in epyc.notes), epyc.notes
    assert _rung(CAMVID, XEON.scaled(1 / 2.5), 40, 101) - _rung(CAMVID, XEON, 40, 101) == 2, "two rungs, not five"
    quarter = plan(CAMVID, XEON.scaled(1 / 4), 40, 101).value("train.input")
    assert floor < input_scale(CAMVID, quarter) < scale, "a quarter as fast: one rung smaller again"


def test_the_scale_does_not_depend_on_the_policy() -> None:
    last = ladder(WIRES, scale_floor(WIRES)[0])[-1]  # the floor's own rung: crops off, the ladder steps past it
    compared = 0
    for speed in FACTORS[::2]:
        cropped = plan(WIRES, WIRES_XEON.scaled(speed), 10, 24)
        whole = plan(WIRES, WIRES_XEON.scaled(speed), 10, 24, crops=False)
        scale = input_scale(WIRES, cropped.value("train.input"))
        if cropped.value("train.input")["policy"] == "crop" and scale > last.scale:
            assert scale == input_scale(WIRES, whole.value("train.input")), speed
            compared += 1
    assert compared >= 3, "the speeds reach rungs above the floor's"


def test_a_what_if_for_a_slower_machine_scales_the_calibration_with_the_probe() -> None:
    """``visionflow plan --speed``: the calibration's real epochs scale with the machine; an unscaled one would
    bring the probe back to this machine's speed (its overhead absorbing the factor) and plan the same again."""
    from visionflow.planning.rules import Calibration

    made = plan(CAMVID, XEON, 40.0, 101)
    spec, batch = made.value("train.input"), int(made.value("train.batch_size"))
    timed = Calibration(spec, batch, first_seconds=90.0, epoch_seconds=87.4)
    here = plan(CAMVID, XEON, 40.0, 101, calibration=timed)
    slower = plan(CAMVID, XEON.scaled(1 / 3), 40.0, 101, calibration=timed.scaled(1 / 3))
    collapsed = plan(CAMVID, XEON.scaled(1 / 3), 40.0, 101, calibration=timed)
    assert input_scale(CAMVID, here.value("train.input")) == 1.0
    assert input_scale(CAMVID, slower.value("train.input")) < 1.0, slower.table()
    assert collapsed.value("train.input") == here.value("train.input"), "the unscaled calibration undoes the speed"
    assert timed.scaled(1 / 3).epoch_seconds == pytest.approx(3 * 87.4)
