"""Smoke tests of benchmarks/: each script runs as a subprocess with its own defaults for everything but the size of
the work (a tiny budget, one epoch, one step, four images), on a synthetic dataset in CamVid's layout, and its JSON
must hold every variant, class and row it prints. They check that the scripts still run against the current stage
API and report what they claim; they never assert a time.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import REPO, tool_env, write_pair
from visionflow.data.sources import PRESETS

pytestmark = pytest.mark.slow

CAMVID = PRESETS["camvid"]
FRAME = (360, 480)  # CamVid's frame size (H, W)
SPLITS = {"train": 6, "val": 3, "test": 2}
# each label's stripe width (classes 0-10, then void): every class in every image, in different shares, so that
# the rarest by train pixels are known: classes 0-3
STRIPE_WEIGHTS = (*range(1, len(CAMVID.classes) + 1), 2)
RAREST = list(CAMVID.classes[:4])


def synthetic_frame(rng: np.random.Generator, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 360x480 frame of four horizontal bands, each of the 12 labels' vertical stripes in its own order, and its
    mask; stripes are coloured by label plus noise, so no two frames are near copies."""
    height, width = FRAME
    mask = np.empty(FRAME, dtype=np.uint8)
    labels = np.array([*range(len(CAMVID.classes)), CAMVID.ignore_index], dtype=np.uint8)
    bands = 4
    for band in range(bands):
        rows = slice(band * height // bands, (band + 1) * height // bands)
        order = rng.permutation(len(labels))  # the stripes' order; each keeps its label's width
        edges = np.round(np.cumsum((0, *np.array(STRIPE_WEIGHTS)[order])) / sum(STRIPE_WEIGHTS) * width).astype(int)
        for (start, stop), label in zip(itertools.pairwise(edges), labels[order], strict=True):
            mask[rows, start:stop] = label
    noise = rng.normal(0, 25, (*FRAME, 3))
    image = np.clip(palette[mask] + noise, 0, 255).astype(np.uint8)
    return image, mask


@pytest.fixture(scope="module")
def synthetic_camvid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CamVid's layout (train/ trainannot/ val/ valannot/ test/ testannot/) and classes, 6 + 3 + 2 frames."""
    root = tmp_path_factory.mktemp("camvid")
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (256, 3)).astype(np.float64)
    for split, count in SPLITS.items():
        for index in range(count):
            image, mask = synthetic_frame(rng, palette)
            write_pair(root, (split, f"{split}annot"), f"{split}_{index:03d}.png", image, mask)
    return root


def run_benchmark(
    script: str, *args: str | Path, check: bool = True, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """``script`` run as a user runs it, from the repository root (or ``cwd``). One torch thread: where the cores are
    shared (CI runners, another test), two spinning OpenMP threads made one step ten times slower; nothing here is
    timed."""
    command = [sys.executable, str(REPO / "benchmarks" / script), *map(str, args)]
    env = tool_env(OMP_NUM_THREADS="1")
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{script} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def report_of(script: str, out: Path, *args: str | Path) -> tuple[dict[str, Any], str]:
    """Run ``script`` with ``--json``: its figures, and what it printed."""
    result = run_benchmark(script, *args, "--json", out)
    return json.loads(out.read_text()), result.stdout


def table_rows(stdout: str, header: str) -> list[str]:
    """The first cells of the rows of the printed markdown table whose header starts with ``header``."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:  # past the header and the |---| line
        if not line.startswith("|"):
            break
        rows.append(line.split("|")[1].strip())
    return rows


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@pytest.fixture(scope="module")
def camvid_run(synthetic_camvid: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """camvid.py at its defaults but a tiny budget, run once: its JSON (plan.py's reference) and what it printed.
    Run from the report's folder with ``--json`` relative, as a user gives it: the report lands there, not in the
    temporary directory the benchmark works in."""
    here = tmp_path_factory.mktemp("camvid-run")
    result = run_benchmark("camvid.py", "--camvid", synthetic_camvid, "--budget-minutes", "0.001", "--json",
                           "camvid.json", cwd=here)  # fmt: skip
    return here / "camvid.json", result.stdout


def test_camvid_reports_every_class_epoch_and_val_image(synthetic_camvid: Path, camvid_run: tuple[Path, str]) -> None:
    report, printed = json.loads(camvid_run[0].read_text()), camvid_run[1]
    assert report["settings"]["input_size"] == [256, 320]  # the default, a valid train.input.size
    assert list(report["per_class_iou"]) == list(CAMVID.classes) == table_rows(printed, "| class |")
    assert all(finite(v) and 0 <= v <= 1 for v in report["per_class_iou"].values())
    assert report["val_miou"] == pytest.approx(np.mean(list(report["per_class_iou"].values())), abs=1e-3)
    assert report["epochs"] == 1 and report["best_epoch"] == 1
    assert [row["epoch"] for row in report["curve"]] == list(range(1, report["epochs"] + 1))
    assert table_rows(printed, "| epoch |") == [str(row["epoch"]) for row in report["curve"]]
    val_ids = sorted(p.stem for p in (synthetic_camvid / "val").iterdir())
    assert sorted(report["per_image"]) == val_ids
    for scores in report["per_image"].values():
        assert set(scores) == {"miou", "pixel_accuracy"} and all(finite(v) and 0 <= v <= 1 for v in scores.values())
    assert all(
        finite(report[k]) and report[k] > 0 for k in ("data_seconds", "train_seconds", "train_images_per_second")
    )


def test_balance_camvid_reports_both_variants_on_the_rarest_classes(synthetic_camvid: Path, tmp_path: Path) -> None:
    report, printed = report_of("balance_camvid.py", tmp_path / "balance.json", "--camvid", synthetic_camvid,
                                "--epochs", "1")  # fmt: skip
    assert report["validation"] == {"images": sum(SPLITS.values()), "accepted": sum(SPLITS.values()),
                                    "seconds": report["validation"]["seconds"]}  # fmt: skip
    assert report["rarest_classes"] == RAREST
    assert list(report["variants"]) == ["unbalanced", "balanced"]
    assert table_rows(printed, "| class |") == [
        *RAREST,
        "mean of the 4 rarest",
        "mIoU (11 classes)",
        "training seconds",
    ]
    for variant in report["variants"].values():
        assert list(variant["rare_iou"]) == RAREST and all(finite(v) for v in variant["rare_iou"].values())
        assert variant["rare_mean_iou"] == pytest.approx(np.mean(list(variant["rare_iou"].values())), abs=1e-4)
        assert list(variant["per_class_iou"]) == list(CAMVID.classes)
        assert finite(variant["miou"]) and variant["best_epoch"] == 1 and variant["train_seconds"] > 0


def test_train_speed_reports_every_precision_of_both_loops(tmp_path: Path) -> None:
    # the size of the work: one timed step of one 64x64 image (bf16 is emulated, and slow, on CPUs without AMX)
    report, printed = report_of("train_speed.py", tmp_path / "speed.json", "--steps", "1", "--batch-size", "1",
                                "--size", "64", "64")  # fmt: skip
    variants = ["plain fp32", *(f"visionflow {p}" for p in report["settings"]["precisions"])]
    assert variants == ["plain fp32", "visionflow fp32", "visionflow bf16"]  # no compiled variant unless asked
    assert list(report["results"]) == variants == table_rows(printed, "| variant |")
    for rates in report["results"].values():
        assert set(rates) == {"train", "inference"} and all(finite(v) and v > 0 for v in rates.values())


def test_predict_speed_reports_every_path_on_random_images_without_camvid(tmp_path: Path) -> None:
    nowhere = tmp_path / "no-camvid"
    out = tmp_path / "predict.json"
    result = run_benchmark("predict_speed.py", "--camvid", nowhere, "--images", "2", "--repeats", "1", "--json", out)
    assert f"CamVid not found at {nowhere}" in result.stderr and "--camvid /path/to/camvid" in result.stderr
    report = json.loads(out.read_text())
    assert report["inputs"] == {"images": 2, "height": 360, "width": 480, "source": "random"}
    paths = table_rows(result.stdout, "| path |")
    assert paths == [
        "bare forward",
        "bare forward, scheduled as predict",
        "plain fp32 forward",
        "Predictor (in memory)",
        "visionflow predict (files)",
    ]
    assert list(report["images_per_second"]) == list(report["ratios"]) == paths
    assert list(report["ratios_to_scheduled_forward"]) == paths
    assert all(finite(v) and v > 0 for v in report["images_per_second"].values())
    assert report["ratios"]["bare forward"] == 1.0 and report["ratios_to_scheduled_forward"][paths[1]] == 1.0


@pytest.mark.parametrize("script", ["camvid.py", "balance_camvid.py"])
def test_training_benchmarks_say_where_they_looked_for_camvid(script: str, tmp_path: Path) -> None:
    result = run_benchmark(script, "--camvid", tmp_path, check=False)
    assert result.returncode == 2
    assert f"CamVid not found at {tmp_path} (expected train/ trainannot/ val/ valannot/ there" in result.stderr
    assert "from a clone elsewhere pass --camvid /path/to/camvid" in result.stderr


def check_plan_report(report: dict[str, Any], printed: str, other: str, classes: list[str]) -> None:
    """plan.py's report: both arms with their plans and scores, the paired interval over every val image, and the
    rarest classes in the printed table."""
    planned, compared = report["planned"], report["comparison"]
    assert planned["arm"] == "planned" and report["other"]["arm"] == other
    assert "| `train.input` |" in planned["plan"] and "| `train.epochs` |" in planned["plan"], planned["plan"]
    assert not any("pinned in params" in row for row in planned["plan"].splitlines()), "every key planned"
    assert set(planned["per_image"]) == set(report["other"]["per_image"]) and compared["images"] > 0
    low, high = compared["interval"]
    assert low <= compared["mean_difference"] <= high
    assert list(compared["rarest"]) == planned["rarest"] and set(planned["rarest"]) <= set(classes)
    assert all(finite(planned[k]) and planned[k] > 0 for k in ("train_minutes", "estimated_minutes"))
    rows = table_rows(printed, "| | planned |")
    assert rows[:2] == ["val mIoU", "training minutes"] and rows[2:-1] == [f"IoU {c}" for c in planned["rarest"]]
    assert f"planned - {other}: mean per-image mIoU difference" in printed


def test_plan_compares_the_planned_camvid_run_with_the_reference(
    synthetic_camvid: Path, camvid_run: tuple[Path, str], tmp_path: Path
) -> None:
    reference = camvid_run[0]
    report, printed = report_of("plan.py", tmp_path / "plan.json", "camvid", "--camvid", synthetic_camvid,
                                "--reference", reference, "--budget-minutes", "0.02")  # fmt: skip
    check_plan_report(report, printed, "reference", list(CAMVID.classes))
    assert report["planned"]["rarest"] == RAREST, "by train pixel share"
    assert sorted(report["planned"]["per_image"]) == sorted(p.stem for p in (synthetic_camvid / "val").iterdir())


def test_plan_compares_crops_with_the_resize_baseline_on_the_wires(tmp_path: Path) -> None:
    # the size of the work: 12 images of 256 px (the benchmark's set is 1024 px), a budget of about one epoch
    report, printed = report_of("plan.py", tmp_path / "plan.json", "wires", "--images", "12", "--budget-minutes",
                                "0.02", "--set", "data.builtin.image_size=256")  # fmt: skip
    check_plan_report(report, printed, "resize", ["background", "plate", "wire", "rivet"])
    assert "policy: resize}" in report["other"]["plan"] and "plan.crops: false" in report["other"]["plan"]


def test_passes_reports_val_miou_per_size_and_passes(tmp_path: Path) -> None:
    report, printed = report_of("passes.py", tmp_path / "passes.json", "--images", "24", "--sizes", "32",
                                "--passes", "1", "2")  # fmt: skip
    arms = report["arms"]
    assert [(a["size"], a["epochs"]) for a in arms] == [(32, 1), (32, 2)]
    assert all(0 <= a["val_miou"] <= 1 and 1 <= a["best_epoch"] <= a["epochs"] for a in arms)
    assert table_rows(printed, "| input |") == ["32x32", "32x32"]


def test_generalise_splits_camvid_by_sequence_and_compares_the_old_defaults(tmp_path: Path) -> None:
    # CamVid's layout with its sequence names, in small frames (the size of the work): 0006R0 sits in train/ and
    # must become val; 0016E5 sits in both and must all be train
    root = tmp_path / "camvid"
    rng = np.random.default_rng(1)
    palette = rng.integers(0, 256, (256, 3)).astype(np.float64)
    frames = {"train": ["0001TP", "0001TP", "0006R0", "0006R0", "0016E5", "0016E5"], "val": ["0016E5", "0016E5"]}
    for split, sequences in frames.items():
        for index, sequence in enumerate(sequences):
            image, mask = synthetic_frame(rng, palette)
            write_pair(root, (split, f"{split}annot"), f"{sequence}_{index:05d}.png", image[::4, ::4], mask[::4, ::4])
    # the old arm at this very commit: what is checked is the worktree and the stage commands, not old code
    old_work = tmp_path / "old"
    report, printed = report_of("generalise.py", tmp_path / "generalise.json", "--camvid", root, "--budgets",
                                "0.02", "0.01", "--old-ref", "HEAD", "--old-work", old_work)  # fmt: skip
    assert report["frames"] == {"train": {"0001TP": 2, "0016E5": 4}, "val": {"0006R0": 2}}
    assert [arm["arm"] for arm in report["arms"]] == ["old", "new-0.01", "new-0.02"], "budgets in rising order"
    val_ids = sorted(p.stem for p in (root / "train").glob("0006R0_*.png"))
    for arm in report["arms"]:
        assert sorted(arm["per_image"]) == val_ids
        assert finite(arm["val_miou"]) and 0 <= arm["val_miou"] <= 1
        assert finite(arm["corruption_mean"]) and 0 <= arm["corruption_mean"] <= 1
        assert "| `train.epochs` |" in arm["plan"]
    news = [arm["val_miou"] for arm in report["arms"][1:]]
    assert report["rises"] == (news[0] < news[1])
    compared = report["comparison"]
    assert compared["new"] == "new-0.02" and compared["images"] == len(val_ids)
    assert compared["interval"][0] <= compared["mean_difference"] <= compared["interval"][1]
    assert table_rows(printed, "| arm |") == ["old", "new-0.01", "new-0.02"]
    assert "new-0.02 - old: mean per-image mIoU difference" in printed
    partial = json.loads((tmp_path / "generalise.partial.json").read_text())
    assert [arm["arm"] for arm in partial["arms"]] == ["old", "new-0.01", "new-0.02"], "saved as each arm ended"
    # the old arm's trained model is kept: scored again without training
    again, printed = report_of("generalise.py", tmp_path / "again.json", "--camvid", root, "--budgets", "0.02",
                               "--old-ref", "HEAD", "--old-work", old_work)  # fmt: skip
    assert "at 0.02 min: kept" in printed and again["arms"][0]["per_image"] == report["arms"][0]["per_image"]
    # or taken from the earlier report (--old-json): compared, not trained, and only at the budget it trained
    taken, printed = report_of("generalise.py", tmp_path / "taken.json", "--camvid", root, "--budgets", "0.02",
                               "--old-json", tmp_path / "generalise.json")  # fmt: skip
    assert "not trained again" in printed and taken["arms"][0] == report["arms"][0]
    assert taken["comparison"]["images"] == len(val_ids)
    wrong = run_benchmark("generalise.py", "--camvid", root, "--budgets", "0.01", "--old-json",
                          tmp_path / "generalise.json", check=False)  # fmt: skip
    assert wrong.returncode != 0 and "not the 0.01 compared" in wrong.stderr
