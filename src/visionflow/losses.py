"""Segmentation losses: class-weighted cross-entropy plus Dice, both leaving out the ignore index."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from segmentation_models_pytorch.losses import DiceLoss
from torch import nn

__all__ = ["WeightedCEDice", "create_loss"]


class WeightedCEDice(nn.Module):
    """``CE(weight=class_weights) + dice_weight * Dice``; pixels equal to ``ignore_index`` count in neither."""

    def __init__(self, class_weights: Sequence[float] | None, ignore_index: int, dice_weight: float = 1.0) -> None:
        super().__init__()
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weight)
        self.ignore_index = ignore_index
        self.dice_weight = dice_weight
        self.dice = DiceLoss(mode="multiclass", from_logits=True, ignore_index=ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        loss = nn.functional.cross_entropy(logits, target, weight=self.class_weights, ignore_index=self.ignore_index)
        if self.dice_weight:
            loss = loss + self.dice_weight * self.dice(logits, target)
        return loss


def create_loss(class_weights: Sequence[float] | None, ignore_index: int, dice_weight: float = 1.0) -> nn.Module:
    return WeightedCEDice(class_weights, ignore_index, dice_weight)
