"""Shared fixtures: small generated datasets, configs rooted in a temporary folder, the CamVid location."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from visionflow.config import BuiltinConfig, Config, load_config
from visionflow.data import builtin
from visionflow.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from visionflow.handoffs import ModelMeta

# MLflow 3 starts a telemetry thread that calls home; nothing is reachable from here, and the suite (with the
# tools it starts, which inherit this) has no use for it
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "data" / "camvid"
BIN = Path(sys.executable).parent


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist the cores are shared by the workers: each worker's torch, and every tool it starts, gets
    its share of threads (two spinning OpenMP pools per core made a training step ten times slower)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        from visionflow.engine import cpu_cores

        threads = max(1, cpu_cores() // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def tool_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: this interpreter's scripts (dvc, visionflow) first on PATH."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


def run_tool(*command: str, cwd: Path, check: bool = True, **extra_env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, env=tool_env(**extra_env), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(autouse=True)
def _isolated_tracking(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test writes to a real MLflow server; none inherits the store another test chose."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "false")
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # mlflow.set_tracking_uri exports it


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary working directory: stage paths in params are relative to it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# The planned train keys at the values the built-in data was tuned with: the stage tests train with them, not with
# a plan (params.yaml leaves them at auto; the plan tests set them to auto again)
PINNED = {
    "train.input": {"size": None, "policy": "resize"},
    "train.epochs": 25,
    "train.batch_size": 16,
    "train.lr": 0.003,
    "train.rare_crops": 0.333,
    "train.augment": {"hflip": 0.5},
}


def make_config(overrides: dict[str, Any] | None = None) -> Config:
    """The repository's params.yaml with :data:`PINNED` and overrides (dotted keys), as a stage would load it."""
    return load_config(REPO / "params.yaml", PINNED | (overrides or {}))


def make_meta(
    task: str,
    classes: list[str] | tuple[str, ...],
    ignore_index: int = 255,
    size: tuple[int, int] | None = (32, 32),
    policy: str = "resize",
    arch: str = "Unet",
    encoder: str = "resnet18",
) -> ModelMeta:
    """The metadata train would write for a model of these names, classes and input."""
    return ModelMeta(task, arch, encoder, tuple(classes), ignore_index, size, policy, IMAGENET_MEAN, IMAGENET_STD)


TINY = {
    "data.builtin.num_images": 24,
    "data.builtin.image_size": 64,
    "train.epochs": 1,
    "train.batch_size": 8,
}


@pytest.fixture
def tiny_config(workdir: Path) -> Config:
    """Builtin data, 24 images of 64x64, one epoch: every stage runs in seconds."""
    return make_config(TINY)


def write_pair(root: Path, split_dirs: tuple[str, str], name: str, image: np.ndarray, mask: np.ndarray) -> Path:
    image_dir, mask_dir = (root / d for d in split_dirs)
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(image_dir / name)
    Image.fromarray(mask).save(mask_dir / name)
    return image_dir / name


def folder_params(root: Path, **extra: Any) -> dict[str, Any]:
    """Params overrides for a dataset made by ``camvid_like``: CamVid's layout and ignore index, the shape classes."""
    return {
        "data.source": "folder",
        "data.root": str(root),
        "data.preset": "camvid",
        "data.classes": list(builtin.CLASSES),
        **extra,
    }


def camvid_like_dataset(root: Path, n_train: int = 8, n_val: int = 4) -> Path:
    """A small dataset in CamVid's layout (train/ trainannot/ val/ valannot/) with the builtin shapes.

    Every shape class appears in train (use :func:`folder_params` for the matching class list).
    """
    cfg = BuiltinConfig(image_size=64, seed=3)
    for index in range(n_train + n_val):
        image, mask = builtin.generate_sample(index, cfg, has_rare=index % 4 == 0)
        dirs = ("train", "trainannot") if index < n_train else ("val", "valannot")
        write_pair(root, dirs, f"frame_{index:03d}.png", image, mask)
    return root


@pytest.fixture
def camvid_like() -> Callable[[Path, int, int], Path]:
    """:func:`camvid_like_dataset`, as a fixture."""
    return camvid_like_dataset


@pytest.fixture
def camvid_root() -> Path:
    if not (CAMVID / "train").is_dir():
        pytest.skip(f"CamVid not found at {CAMVID} (the shared data folder); real-data tests need it")
    return CAMVID


def copy_project(dest: Path) -> Path:
    """A fresh git + DVC repository holding this project's pipeline definition and code (for end-to-end runs)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "pipelines", dest / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
    (dest / ".gitignore").write_text("/data/\n/mlflow.db\n/mlartifacts/\n/dvc_plots/\n")
    run_tool("git", "init", "-q", "-b", "main", cwd=dest)
    run_tool("git", "config", "user.email", "ci@visionflow.test", cwd=dest)
    run_tool("git", "config", "user.name", "visionflow tests", cwd=dest)
    run_tool("dvc", "init", "-q", cwd=dest)
    run_tool("dvc", "config", "core.analytics", "false", cwd=dest)
    shutil.copytree(REPO / ".dvc" / "plots", dest / ".dvc" / "plots")  # `dvc plots show`'s offline page
    run_tool("dvc", "config", "plots.html_template", "plots/offline.html", cwd=dest)
    run_tool("git", "add", "-A", cwd=dest)
    run_tool("git", "commit", "-q", "-m", "pipeline", cwd=dest)
    return dest
