from __future__ import annotations

import pytest
import torch
from segmentation_models_pytorch.losses import DiceLoss
from torch.nn import functional as F

from visionflow.losses import create_loss, dice_loss, focal_loss


def sample(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    logits, target = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    target[:, :2] = 255
    return logits, target


@pytest.mark.parametrize("terms", [{"ce": 1.0}, {"dice": 1.0}, {"focal": 1.0}, {"ce": 1.0, "dice": 0.5, "focal": 2.0}])
def test_ignored_pixels_do_not_change_any_term(terms: dict[str, float]) -> None:
    logits, target = sample()
    loss_fn = create_loss(terms, [1.0, 2.0, 0.5], ignore_index=255)
    changed = logits.clone()
    changed[:, :, :2] = torch.randn(2, 3, 2, 8) * 10
    assert torch.isclose(loss_fn(logits, target), loss_fn(changed, target))


@pytest.mark.parametrize("term", ["ce", "dice", "focal"])
def test_class_weights_change_every_term(term: str) -> None:
    logits, target = sample()
    plain = create_loss({term: 1.0}, None, ignore_index=255)(logits, target)
    weighted = create_loss({term: 1.0}, [1.0, 5.0, 1.0], ignore_index=255)(logits, target)
    assert not torch.isclose(plain, weighted)


def test_weighted_ce_matches_torch() -> None:
    logits, target = sample()
    ours = create_loss({"ce": 1.0}, [1.0, 5.0, 1.0], ignore_index=255)(logits, target)
    expected = F.cross_entropy(logits, target, weight=torch.tensor([1.0, 5.0, 1.0]), ignore_index=255)
    assert torch.isclose(ours, expected)


@pytest.mark.parametrize("weights", [None, [1.0, 5.0, 0.5, 2.0]])
@pytest.mark.parametrize("shape", [(3, 4, 9, 7), (6, 4)], ids=["segmentation", "classification"])
def test_dice_matches_smp_in_value_and_gradient(weights: list[float] | None, shape: tuple[int, ...]) -> None:
    """Our Dice is smp's multiclass DiceLoss computed without the one-hot targets: the same loss and gradient,
    with ignored pixels and a class absent from the targets (it adds nothing)."""
    torch.manual_seed(1)
    logits = torch.randn(*shape) * 3
    target = torch.randint(0, 3, (shape[0], *shape[2:]))  # class 3 never appears
    target.view(-1)[::5] = 255
    ours_in, smp_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours = dice_loss(ours_in, target, None if weights is None else torch.tensor(weights), 255)
    theirs = DiceLoss("multiclass", from_logits=True, ignore_index=255, class_weights=weights)(smp_in, target)
    ours.backward()
    theirs.backward()
    assert 0 < ours.item() < 1
    assert torch.isclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert torch.allclose(ours_in.grad, smp_in.grad, rtol=1e-4, atol=1e-7)


def test_focal_with_gamma_zero_is_weighted_ce() -> None:
    logits, target = sample()
    weight = torch.tensor([1.0, 5.0, 1.0])
    expected = F.cross_entropy(logits, target, weight=weight, ignore_index=255)
    assert torch.isclose(focal_loss(logits, target, weight, 255, gamma=0.0), expected)
    assert focal_loss(logits, target, weight, 255, gamma=2.0) < expected, "focal down-weights easy pixels"


def test_terms_add_with_coefficients() -> None:
    logits, target = sample()
    ce = create_loss({"ce": 1.0}, None, 255)(logits, target)
    dice = create_loss({"dice": 1.0}, None, 255)(logits, target)
    both = create_loss({"ce": 1.0, "dice": 0.5}, None, 255)(logits, target)
    assert torch.isclose(both, ce + 0.5 * dice)


def test_unknown_term_lists_choices() -> None:
    with pytest.raises(ValueError, match="ce, focal, dice"):
        create_loss({"lovasz": 1.0}, None, 255)
