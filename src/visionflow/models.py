"""Model factories keyed by strings; an unknown name fails with the list of valid ones.

Segmentation: any smp architecture with any smp encoder or ``tu-<timm model>``; a two-class dataset
(background + one foreground) gets one output channel (sigmoid, thresholded). Classification: any timm model.
"""

from __future__ import annotations

import difflib
from dataclasses import replace
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import timm
import torch
from torch import nn

from visionflow.config import ModelConfig
from visionflow.errors import ConfigError
from visionflow.handoffs import ModelMeta, load_weights_and_meta

__all__ = [
    "ModelError",
    "architectures",
    "build_model",
    "create_classifier",
    "create_model",
    "create_segmenter",
    "encoders",
    "is_binary",
    "load_model",
    "load_weights",
    "output_channels",
    "save_model",
    "update_meta",
]


class ModelError(ConfigError):
    """A model cannot be built from the given names or weights (params name something that does not exist)."""


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


def _unknown_timm(name: str) -> ModelError:
    """timm has over a thousand names: suggest the closest ones and say how to list the rest."""
    names = timm.list_models()
    close = difflib.get_close_matches(name, names, n=8, cutoff=0.5)
    maybe = f" Closest: {', '.join(close)}." if close else ""
    family = name.rstrip("0123456789_")[:8] or name
    return ModelError(
        f"unknown timm model '{name}'.{maybe} timm has {len(names)} models; "
        f"list them with timm.list_models('*{family}*')."
    )


def _check_encoder(name: str) -> None:
    if name.startswith("tu-"):
        timm_name = name[3:]
        if not timm.is_model(timm_name):
            raise _unknown_timm(timm_name)
    elif name not in smp.encoders.get_encoder_names():
        raise _unknown("encoder", name, encoders(), " Any timm model also works as 'tu-<name>'.")


def is_binary(task: str, num_classes: int) -> bool:
    """Binary segmentation: one foreground class next to the background."""
    return task == "segmentation" and num_classes == 2


def output_channels(task: str, num_classes: int) -> int:
    return 1 if is_binary(task, num_classes) else num_classes


def create_model(config: ModelConfig, task: str, num_classes: int) -> nn.Module:
    """The model for ``task``: an smp segmenter or a timm classifier."""
    if task == "classification":
        return create_classifier(config, num_classes)
    return create_segmenter(config, output_channels(task, num_classes))


def create_classifier(config: ModelConfig, num_classes: int) -> nn.Module:
    """A timm model with a ``num_classes`` head; ``model.arch`` is the timm name (e.g. resnet18, convnext_atto)."""
    name = config.arch.removeprefix("tu-")
    if not timm.is_model(name):
        raise _unknown_timm(name)
    pretrained = config.encoder_weights is not None
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes)
    except Exception as exc:  # a hub download that cannot happen offline
        raise ModelError(f"timm model '{name}' with pretrained weights: {exc}; set model.weights_path") from None
    if config.weights_path is not None:
        load_weights(model, config.weights_path, config.weights_scope, task="classification")
    return model


def create_segmenter(config: ModelConfig, num_classes: int) -> nn.Module:
    """An smp model with ``num_classes`` output channels, optionally loading local weights."""
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
        load_weights(model, config.weights_path, config.weights_scope, task="segmentation")
    return model


def _backbone(model: nn.Module, task: str) -> nn.Module:
    """What ``weights_scope: encoder`` fills: smp's encoder, or a timm classifier without its head."""
    if task == "segmentation":
        return model.encoder  # type: ignore[return-value]
    return model


def load_weights(model: nn.Module, path: Path, scope: str, task: str) -> None:
    """Load a local state dict (a bare one, a ``{"state_dict": ...}`` file, or one saved by :func:`save_model`).

    ``scope: model`` loads every tensor and fails on any mismatch; ``encoder`` fills the encoder (segmentation)
    or every tensor but the classification head (classification), ignoring the rest.
    """
    if not Path(path).is_file():
        raise ModelError(f"model.weights_path '{path}' does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if scope == "model":
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelError(f"{path}: weights do not fit the whole model (weights_scope: model): {exc}") from None
        return
    encoder = _backbone(model, task)
    expected = encoder.state_dict()
    if task == "classification":  # leave the head (whose size is the class count) to its fresh init
        head = {f"{k}" for k in expected if k.startswith(_head_prefix(model))}
        state = {k: v for k, v in state.items() if k not in head}
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


def _head_prefix(model: nn.Module) -> str:
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    for name, module in model.named_modules():
        if module is classifier and name:
            return name + "."
    return "\0"  # matches nothing


def save_model(model: nn.Module, path: Path, meta: ModelMeta) -> None:
    """The weights with their metadata (plain tensors and values, so ``weights_only=True`` loads it)."""
    meta.save(path, {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})


def update_meta(path: Path, **changes: Any) -> ModelMeta:
    """Change the metadata of a saved model (the binary threshold, once it is chosen); returns the new one."""
    state, meta = load_weights_and_meta(path)
    meta = replace(meta, **changes)
    meta.save(path, state)
    return meta


def build_model(meta: ModelMeta) -> nn.Module:
    """The untrained model that ``meta`` describes (no weights are downloaded or loaded)."""
    config = ModelConfig(arch=meta.arch, encoder=meta.encoder)
    return create_model(config, meta.task, num_classes=len(meta.classes))


def load_model(path: Path) -> tuple[nn.Module, ModelMeta]:
    """Rebuild a model saved by :func:`save_model`; returns it (in eval mode) and its metadata."""
    state, meta = load_weights_and_meta(path)
    model = build_model(meta)
    model.load_state_dict(state)
    return model.eval(), meta
