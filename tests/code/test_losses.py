from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from visionflow.losses import create_loss, focal_loss


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
