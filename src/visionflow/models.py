"""Model factories keyed by strings; an unknown name fails with the list of valid ones."""

from __future__ import annotations

import difflib
from pathlib import Path

import segmentation_models_pytorch as smp
import timm
import torch
from torch import nn

from visionflow.config import ModelConfig

__all__ = [
    "ModelError",
    "architectures",
    "create_segmenter",
    "encoders",
    "load_encoder_weights",
    "load_model",
    "save_model",
]


class ModelError(ValueError):
    """A model cannot be built from the given names or weights."""


def architectures() -> list[str]:
    """smp architecture names as the params accept them."""
    return sorted(cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values())


def encoders() -> list[str]:
    """smp's own encoder names; any timm model is accepted as ``tu-<name>`` besides these."""
    return sorted(smp.encoders.get_encoder_names())


def _unknown(kind: str, name: str, valid: list[str], hint: str = "") -> ModelError:
    close = difflib.get_close_matches(name, valid, n=3)
    maybe = f" Did you mean {', '.join(close)}?" if close else ""
    return ModelError(f"unknown {kind} '{name}'.{maybe} Valid: {', '.join(valid)}.{hint}")


def _check_encoder(name: str) -> None:
    if name.startswith("tu-"):
        timm_name = name[3:]
        if not timm.is_model(timm_name):
            raise _unknown("timm model", timm_name, timm.list_models(f"*{timm_name[:4]}*")[:30] or ["(none)"])
    elif name not in smp.encoders.get_encoder_names():
        raise _unknown("encoder", name, encoders(), " Any timm model also works as 'tu-<name>'.")


def create_segmenter(config: ModelConfig, num_classes: int) -> nn.Module:
    """An smp model with ``num_classes`` output channels, optionally loading local encoder weights."""
    arch = {a.lower(): a for a in architectures()}.get(config.arch.lower())
    if arch is None:
        raise _unknown("architecture", config.arch, architectures())
    _check_encoder(config.encoder)
    model = smp.create_model(
        arch,
        encoder_name=config.encoder,
        encoder_weights=config.encoder_weights,
        in_channels=3,
        classes=num_classes,
    )
    if config.weights_path is not None:
        load_encoder_weights(model, config.weights_path)
    return model


def load_encoder_weights(model: nn.Module, path: Path) -> None:
    """Load a local state dict into ``model.encoder`` (the offline stand-in for hub weights)."""
    if not Path(path).is_file():
        raise ModelError(f"model.weights_path '{path}' does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    encoder: nn.Module = model.encoder  # type: ignore[assignment]
    expected = encoder.state_dict()
    if not set(state) & set(expected):
        raise ModelError(
            f"{path}: no tensor matches the encoder '{type(encoder).__name__}'; the file has keys "
            f"like {list(state)[:3]}, the encoder expects keys like {list(expected)[:3]}"
        )
    try:
        _, unexpected = encoder.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that do not fit: another encoder's weights
        raise ModelError(f"{path}: weights do not fit the encoder: {exc}") from None
    if unexpected:
        print(f"note: {path}: {len(unexpected)} keys not used by the encoder (e.g. {unexpected[:3]})")


def save_model(
    model: nn.Module,
    path: Path,
    config: ModelConfig,
    classes: tuple[str, ...] | list[str],
    ignore_index: int,
    extra: dict[str, float | int | str] | None = None,
) -> None:
    """Weights plus what rebuilding them needs; plain tensors and strings, so ``weights_only=True`` loads it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "arch": config.arch,
        "encoder": config.encoder,
        "classes": list(classes),
        "ignore_index": ignore_index,
    }
    torch.save({"state_dict": state, "meta": meta | dict(extra or {})}, path)


def load_model(path: Path) -> tuple[nn.Module, dict[str, object]]:
    """Rebuild a model saved by :func:`save_model`; returns it (in eval mode) and its metadata."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: model not found; run `visionflow train`")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    meta = saved["meta"]
    config = ModelConfig(arch=str(meta["arch"]), encoder=str(meta["encoder"]))
    model = create_segmenter(config, num_classes=len(meta["classes"]))
    model.load_state_dict(saved["state_dict"])
    return model.eval(), meta
