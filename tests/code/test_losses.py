from __future__ import annotations

import torch

from visionflow.losses import create_loss


def test_ignored_pixels_do_not_change_the_loss() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    target[:, :2] = 255
    loss_fn = create_loss([1.0, 2.0, 0.5], ignore_index=255)
    changed = logits.clone()
    changed[:, :, :2] = torch.randn(2, 3, 2, 8) * 10
    assert torch.isclose(loss_fn(logits, target), loss_fn(changed, target))


def test_class_weights_change_the_loss() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    plain = create_loss(None, ignore_index=255, dice_weight=0.0)(logits, target)
    weighted = create_loss([1.0, 5.0, 1.0], ignore_index=255, dice_weight=0.0)(logits, target)
    expected = torch.nn.functional.cross_entropy(logits, target, weight=torch.tensor([1.0, 5.0, 1.0]))
    assert torch.isclose(weighted, expected) and not torch.isclose(plain, weighted)


def test_dice_term_is_added() -> None:
    logits, target = torch.randn(1, 3, 8, 8), torch.randint(0, 3, (1, 8, 8))
    ce = create_loss(None, 255, dice_weight=0.0)(logits, target)
    both = create_loss(None, 255, dice_weight=1.0)(logits, target)
    assert both > ce
