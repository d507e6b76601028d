"""Training checkpoints that a killed run resumes from, bit for bit.

A checkpoint holds everything the next epoch depends on: weights, optimiser and scheduler state, the weights'
moving average and its step count (``train.ema_decay``), the global random number generators (python, numpy,
torch: dropout and anything else that draws from them), the epoch (the sampler and the augmentation reseed from
it, see ``EpochSampler``), the best score so far, the history and the MLflow run id. It is written atomically
after the last epoch and after any epoch that ends ``train.checkpoint_minutes`` after the previous save, and
holds only tensors and plain values, so ``torch.load(..., weights_only=True)`` reads it. A fingerprint of what the
training depends on says whether a checkpoint belongs to the current params and data.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["TrainingState", "capture_rng", "fingerprint", "load_checkpoint", "restore_rng", "save_checkpoint"]


@dataclass
class TrainingState:
    """Progress that is not a tensor: what the loop needs to carry on where it stopped."""

    epoch: int = 0  # epochs completed
    best_score: float = -1.0
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    run_id: str = ""
    fingerprint: str = ""


def fingerprint(parts: dict[str, Any], files: list[Path]) -> str:
    """sha256 over the training params and the bytes of the files it reads (data manifest, class weights)."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for path in files:
        digest.update(path.read_bytes() if path.is_file() else b"missing")
    return digest.hexdigest()


def capture_rng() -> dict[str, Any]:
    """The global generators' states (torch, numpy, python) as tensors and plain values."""
    mt_name, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": mt_name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "state": list(py_state), "gauss": gauss},
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def save_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: TrainingState,
    average: Any = None,
) -> None:
    """Write the checkpoint next to its final name, then rename: a kill mid-write leaves the old one intact.
    ``average``: the weights' moving average (anything with a ``state_dict()`` of plain values), where trained."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": capture_rng(),
        "state": state.__dict__,
    }
    if average is not None:
        payload["average"] = average.state_dict()
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    os.replace(partial, path)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (weights_only), or None when there is none or it is unreadable."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        payload["state"] = TrainingState(**payload["state"])
        missing = {"model", "optimizer", "scheduler", "rng"} - set(payload)
        if missing:
            raise KeyError(f"no {', '.join(sorted(missing))}")
    except Exception as exc:  # a checkpoint from an older layout or a broken file: start over, say why
        print(f"train: ignoring checkpoint {path} ({type(exc).__name__}: {exc}); starting from scratch")
        return None
    return payload
