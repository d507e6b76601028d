"""Train-time augmentation through ``torchvision.transforms.v2``: one policy (``train.augment``, planned from the
data where it says ``auto``) made into one v2 pipeline that moves an image and its mask together.

Geometry (flips, a rotation and zoom about the centre) applies to image and mask alike: the image bilinearly, the
mask by nearest neighbour (v2 does this for a ``tv_tensors.Mask``), and pixels that come from outside the image are
black in the image and the ignore index in the mask, so they are never scored. Photometric changes (brightness,
contrast, saturation, gamma, blur, noise) touch the image only. The ranges and probabilities are nnU-Net's defaults
(Isensee et al., Nature Methods 2021, and its ``get_training_transforms``) where it has one; the auto policy and
why it differs from data to data are in :func:`visionflow.planning.rules.augment_policy`.

v2 draws from torch's global generator. Each item's draws come from the dataset's own generator instead (reseeded
per epoch and rank, see :class:`~visionflow.data.dataset.ImageDataset`): a seed is taken from it and the pipeline
runs under that seed in a forked global state, so training is reproducible, a resumed run draws what an unbroken
one would, and nothing else that uses the global generator sees a difference.

Images are (H, W, 3) uint8 and masks (H, W) int64 tensors, as the rest of the loader has them; v2 works on
channels-first views of them, with no copy where a transform does not move pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

__all__ = ["BLUR_SIGMA", "NOISE_SIGMA", "Augment", "RandomGamma"]

BLUR_SIGMA = (0.5, 1.0)  # px, drawn per image (nnU-Net's GaussianBlurTransform)
BLUR_KERNEL = 5  # covers +-2.5 sigma at the largest sigma
NOISE_SIGMA = 0.05  # of the intensity range (13 grey levels); ImageNet-C's mildest noise is 0.08


class RandomGamma(v2.Transform):
    """``x ** gamma`` on intensities scaled to [0, 1], gamma drawn uniformly in ``gamma`` (nnU-Net's
    GammaTransform); masks pass unchanged."""

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, gamma: tuple[float, float]) -> None:
        super().__init__()
        self.gamma = (float(gamma[0]), float(gamma[1]))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"gamma": float(torch.empty(()).uniform_(*self.gamma))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return TF.adjust_gamma(inpt, params["gamma"])


class Augment:
    """The v2 pipeline of one policy: the fields of ``train.augment`` (:class:`visionflow.config.AugmentConfig`),
    as a mapping. ``Augment(policy)(image, mask, ignore_index, generator)`` returns the augmented pair."""

    def __init__(self, policy: Mapping[str, Any]) -> None:
        self.policy = dict(policy)
        self._pipelines: dict[int, v2.Compose] = {}  # by ignore index: the fill of a mask's outside pixels

    def pipeline(self, ignore_index: int) -> v2.Compose:
        """The transforms in the order they apply: geometry first, then colour, then blur and noise."""
        if ignore_index not in self._pipelines:
            self._pipelines[ignore_index] = v2.Compose(_transforms(self.policy, ignore_index) or [v2.Identity()])
        return self._pipelines[ignore_index]

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor | None, ignore_index: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        pipeline = self.pipeline(ignore_index)
        seed = int(torch.randint(2**62, (), generator=generator))
        inputs: tuple[Any, ...] = (tv_tensors.Image(image.permute(2, 0, 1)),)
        if mask is not None:
            inputs += (tv_tensors.Mask(mask),)
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            out = pipeline(*inputs)
        out = out if isinstance(out, tuple) else (out,)
        moved = out[0].as_subclass(torch.Tensor).permute(1, 2, 0)
        return moved, None if mask is None else out[1].as_subclass(torch.Tensor)


def _transforms(policy: Mapping[str, Any], ignore_index: int) -> list[v2.Transform]:
    p = policy
    out: list[v2.Transform] = []
    if p.get("hflip", 0) > 0:
        out.append(v2.RandomHorizontalFlip(p["hflip"]))
    if p.get("vflip", 0) > 0:
        out.append(v2.RandomVerticalFlip(p["vflip"]))
    if (p.get("rotate", 0) > 0 or p.get("scale") is not None) and p.get("affine", 0) > 0:
        affine = v2.RandomAffine(
            degrees=float(p.get("rotate", 0)),
            scale=None if p.get("scale") is None else tuple(p["scale"]),
            interpolation=v2.InterpolationMode.BILINEAR,
            fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index},
        )
        out.append(v2.RandomApply([affine], p=p["affine"]))
    colour = p.get("colour", 0)
    if colour > 0:
        for name in ("brightness", "contrast", "saturation"):
            if p.get(name, 0) > 0:
                out.append(v2.RandomApply([v2.ColorJitter(**{name: p[name]})], p=colour))
        if p.get("gamma") is not None:
            out.append(v2.RandomApply([RandomGamma(p["gamma"])], p=colour))
    if p.get("blur", 0) > 0:
        out.append(v2.RandomApply([v2.GaussianBlur(BLUR_KERNEL, BLUR_SIGMA)], p=p["blur"]))
    if p.get("noise", 0) > 0:  # v2's noise takes float images: to [0, 1] and back, for the images it noises only
        noise = [v2.ToDtype(torch.float32, scale=True), v2.GaussianNoise(sigma=NOISE_SIGMA), v2.ToDtype(torch.uint8,
                 scale=True)]  # fmt: skip
        out.append(v2.RandomApply(noise, p=p["noise"]))
    return out
