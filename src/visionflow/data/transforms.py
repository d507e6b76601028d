"""Input policies on uint8 tensors, applied identically to an image and its mask, and mapping logits back.

Images are (H, W, 3) uint8, masks (H, W) int64; both stay on the CPU. Pure functions; the random crops draw from
a ``torch.Generator`` they are given, so training is deterministic and a resumed run draws the same numbers
(train-time augmentation is :mod:`visionflow.data.augment`).

Input policies (``train.input`` / ``evaluate.input``):

- ``resize``: bilinear image, nearest-neighbour mask, to ``size``.
- ``pad``: pad bottom and right to ``size`` (or to the next multiple of 32 without one): the model sees every
  pixel at its native resolution. Padding is black in the image and the ignore index in the mask.
- ``crop``: a random ``size`` window in training (padded first where the image is smaller); evaluation never
  crops, because every pixel must be scored.

Evaluation scores at the original mask resolution: :func:`restore` maps logits back (interpolation for
``resize``, slicing off the padding for ``pad``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "STRIDE",
    "apply_policy",
    "crop_around",
    "decide",
    "normalise",
    "pad_collate",
    "pad_to",
    "resize",
    "restore",
    "restore_decide",
    "restore_groups",
    "round_up",
    "scaled_size",
    "size_groups",
]

STRIDE = 32  # encoders downsample by 32: sides must be multiples of it
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the statistics smp and timm encoders are trained with
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise(
    images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W): ``(x / 255 - mean) / std`` per channel (the encoder statistics)."""
    std = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    scale = 1.0 / (255.0 * std)
    shift = torch.tensor(mean, device=images.device).view(1, 3, 1, 1) / std
    # one fused multiply-subtract over the permuted view: (x / 255 - mean) / std, channels-last in memory
    return torch.addcmul(-shift, images.permute(0, 3, 1, 2), scale)


def round_up(value: int, multiple: int = STRIDE) -> int:
    return -(-value // multiple) * multiple


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(height, width) shrunk by ``scale`` (rounded, at least 1 px): the image the crop and window policies cut
    from when ``train.input.scale`` is below 1."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(
    image: torch.Tensor, mask: torch.Tensor | None, size: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Bilinear (antialiased when shrinking) for the image, nearest for the mask.

    uint8 images on the CPU are interpolated as uint8 (PyTorch's fixed-point kernel: within one grey level of the
    float path and measured 3x faster), for training and serving alike.
    """
    height, width = int(size[0]), int(size[1])
    if tuple(image.shape[:2]) == (height, width):
        return image, mask
    native = image.dtype == torch.uint8 and image.device.type == "cpu"
    x = image.permute(2, 0, 1)[None]
    shrink = height < image.shape[0] or width < image.shape[1]
    x = F.interpolate(x if native else x.float(), size=(height, width), mode="bilinear", align_corners=False,
                      antialias=shrink)  # fmt: skip
    out = x[0].permute(1, 2, 0)
    out = out.contiguous() if native else out.round().clamp(0, 255).to(torch.uint8)
    if mask is not None:
        mask = F.interpolate(mask[None, None].float(), size=(height, width), mode="nearest")[0, 0].long()
    return out, mask


def pad_to(
    image: torch.Tensor, mask: torch.Tensor | None, size: Sequence[int], ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pad bottom/right up to ``size`` (never shrinks): zeros in the image, ``ignore_index`` in the mask."""
    pad_h, pad_w = max(0, int(size[0]) - image.shape[0]), max(0, int(size[1]) - image.shape[1])
    if not pad_h and not pad_w:
        return image, mask
    image = F.pad(image.permute(2, 0, 1), (0, pad_w, 0, pad_h)).permute(1, 2, 0)
    if mask is not None:
        mask = F.pad(mask, (0, pad_w, 0, pad_h), value=ignore_index)
    return image, mask


def _crop(
    image: torch.Tensor, mask: torch.Tensor | None, size: Sequence[int], top: int, left: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    height, width = int(size[0]), int(size[1])
    image = image[top : top + height, left : left + width]
    return image, None if mask is None else mask[top : top + height, left : left + width]


def apply_policy(
    image: torch.Tensor,
    mask: torch.Tensor | None,
    policy: str,
    size: Sequence[int] | None,
    ignore_index: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Bring one sample to the model's input size. ``crop`` is random with a generator, centred without one;
    ``window`` leaves the image as it is (it is scored window by window, :mod:`visionflow.windows`)."""
    if policy == "window":
        return image, mask
    if policy == "resize":
        return resize(image, mask, size) if size is not None else (image, mask)
    target = size if size is not None else (round_up(image.shape[0]), round_up(image.shape[1]))
    if policy == "pad":
        return pad_to(image, mask, target, ignore_index)
    if policy != "crop":
        raise ValueError(f"unknown input policy '{policy}'; choose resize, pad, crop or window")
    image, mask = pad_to(image, mask, target, ignore_index)
    spare_h, spare_w = image.shape[0] - int(target[0]), image.shape[1] - int(target[1])
    if generator is None:
        top, left = spare_h // 2, spare_w // 2
    else:
        top = int(torch.randint(spare_h + 1, (1,), generator=generator))
        left = int(torch.randint(spare_w + 1, (1,), generator=generator))
    return _crop(image, mask, target, top, left)


def crop_around(
    image: torch.Tensor,
    mask: torch.Tensor,
    size: Sequence[int],
    targets: Sequence[int],
    ignore_index: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``size`` window that holds a pixel of one of ``targets`` (rare classes, say): the class is drawn
    uniformly among those the mask holds (nnU-Net's foreground sampling), the pixel uniformly among its pixels, and
    the window placed at random around it within the image. A mask holding none of them gets a random window."""
    image, mask = pad_to(image, mask, size, ignore_index)
    height, width = int(size[0]), int(size[1])
    present = [c for c in targets if bool((mask == c).any())]
    if not present:
        return apply_policy(image, mask, "crop", size, ignore_index, generator)  # type: ignore[return-value]
    chosen = present[int(torch.randint(len(present), (1,), generator=generator))]
    rows, cols = (mask == chosen).nonzero(as_tuple=True)
    pick = int(torch.randint(len(rows), (1,), generator=generator))
    row, col = int(rows[pick]), int(cols[pick])

    def start(at: int, window: int, length: int) -> int:  # a window start that keeps `at` inside, within bounds
        low, high = max(0, at - window + 1), min(at, length - window)
        return low + int(torch.randint(high - low + 1, (1,), generator=generator))

    top, left = start(row, height, image.shape[0]), start(col, width, image.shape[1])
    return image[top : top + height, left : left + width], mask[top : top + height, left : left + width]


def restore(logits: torch.Tensor, sizes: Sequence[int], policy: str) -> torch.Tensor:
    """(N, C, h, w) logits -> (N, C, H, W) at the original resolution.

    ``sizes`` is (input height, input width, original height, original width): the collate padding beyond the
    input is sliced off first, then ``pad`` slices off its own padding and ``resize`` interpolates.
    """
    in_h, in_w, height, width = (int(v) for v in sizes)
    logits = logits[..., :in_h, :in_w]
    if (in_h, in_w) == (height, width):
        return logits
    if policy == "pad":
        return logits[..., :height, :width]
    logits = logits.contiguous(memory_format=torch.channels_last)  # faster here, and what decide() wants
    return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)


def restore_groups(
    logits: torch.Tensor, sizes: torch.Tensor, policy: str
) -> list[tuple[int, int, tuple[int, ...], torch.Tensor]]:
    """(start, stop, sizes, restored logits) per run of images that share their sizes: a batch of equal-sized
    images is mapped back in one call (measured faster than one call per image)."""
    return [(a, b, key, restore(logits[a:b], key, policy)) for a, b, key in size_groups(sizes)]


def size_groups(sizes: torch.Tensor) -> list[tuple[int, int, tuple[int, ...]]]:
    """(start, stop, sizes) spans of a batch: the whole batch when its images share their sizes, else one each."""
    keys = [tuple(int(v) for v in row) for row in sizes]
    spans = [(0, len(keys))] if len(set(keys)) == 1 else [(i, i + 1) for i in range(len(keys))]
    return [(a, b, keys[a]) for a, b in spans]


def _bilinear_sources(
    in_size: int, out_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each output row (or column) of ``F.interpolate(mode="bilinear", align_corners=False)``: the lower and
    upper source index and the weight of the upper one."""
    steps = torch.arange(out_size, dtype=torch.float32, device=device)
    source = ((steps + 0.5) * (in_size / out_size) - 0.5).clamp(min=0)
    lower = source.floor().long().clamp(max=in_size - 1)
    return lower, (lower + 1).clamp(max=in_size - 1), source - lower


def restore_decide(logits: torch.Tensor, sizes: Sequence[int], policy: str, threshold: float = 0.5) -> torch.Tensor:
    """``decide(restore(logits, sizes, policy), threshold)`` without building full-resolution logits.

    A bilinearly interpolated pixel is a convex mix of four source pixels, and a mix of vectors that share their
    argmax (or all lie on one side of a threshold) keeps that decision. So only output pixels whose four sources
    disagree, the object boundaries (~5% of a CamVid frame), are interpolated; the rest copy the source decision.
    Same answer as the full path up to float rounding at near-ties (measured: 1 pixel in 21 million on random
    logits), in a fraction of its time and memory. ``logits`` may be bf16 (the model's output under autocast):
    decisions are taken on them as they are and the boundary mixes in fp32, so nothing is copied to fp32 whole.
    Returns uint8 class ids (int64 beyond 255 classes).
    """
    in_h, in_w, height, width = (int(v) for v in sizes)
    logits = logits[..., :in_h, :in_w]
    channels = logits.shape[1]
    ids, marker = (torch.uint8, 255) if channels <= 255 else (torch.long, -1)
    if policy == "pad" or (in_h, in_w) == (height, width):
        return decide(logits[..., :height, :width], threshold).to(ids)
    # the marker tags a source pixel whose 2x2 block (the four sources of the output pixels it feeds) is mixed
    low = decide(logits, threshold).to(ids)
    # (the last row and column are their own lower / right neighbours: the upper source index stops at the edge)
    down = torch.cat([low[:, 1:], low[:, -1:]], dim=1)
    edge = (low != down) | (low != torch.cat([low[:, :, 1:], low[:, :, -1:]], dim=2))
    edge |= low != torch.cat([down[:, :, 1:], down[:, :, -1:]], dim=2)
    code = low.masked_fill(edge, marker)
    y0, y1, wy = _bilinear_sources(in_h, height, logits.device)
    x0, x1, wx = _bilinear_sources(in_w, width, logits.device)
    out = code.index_select(1, y0).index_select(2, x0)
    n, row, col = (out == marker).nonzero(as_tuple=True)
    if len(n) > out.numel() // 4:  # a map mostly of boundaries (noise): interpolating everything is cheaper
        return decide(restore(logits.float(), sizes, policy), threshold).to(ids)
    if len(n):
        flat = logits.permute(0, 2, 3, 1).reshape(-1, channels)  # a view when the logits are channels-last
        left, right, fx, fy = x0[col], x1[col], wx[col, None], wy[row, None]

        def along_x(rows: torch.Tensor) -> torch.Tensor:  # one source row's pair, mixed as F.interpolate does
            return (
                flat.index_select(0, rows + left)
                .float()
                .mul_(1 - fx)
                .addcmul_(flat.index_select(0, rows + right).float(), fx)
            )

        top, bottom = along_x((n * in_h + y0[row]) * in_w), along_x((n * in_h + y1[row]) * in_w)
        mixed = top.mul_(1 - fy).addcmul_(bottom, fy)
        out[n, row, col] = decide(mixed.view(-1, channels, 1, 1), threshold).view(-1).to(out.dtype)
    return out


def decide(logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Class ids from logits: argmax over channels, or ``sigmoid > threshold`` for a one-channel binary map.

    The argmax runs on a channels-last copy: reducing over the channel axis of an NCHW map strides through
    memory and measured ~10x slower here (34 ms vs 4 ms for 12 x 360 x 480). bf16 logits are compared as they
    are (exact: widening them to fp32 changes no order, only costs a copy); the binary threshold is applied in
    fp32, where bf16's coarse steps near 0.5 would move pixels.
    """
    if logits.ndim == 4 and logits.shape[1] == 1:
        return (logits[:, 0].float().sigmoid() > threshold).long()
    if logits.ndim == 4:  # max(...).indices: the same first-maximum ids as argmax, and measured faster on CPU
        return logits.contiguous(memory_format=torch.channels_last).max(dim=1).indices
    return logits.argmax(dim=1)


def pad_collate(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack (image, target, sizes) items. Images are padded to the batch's largest side rounded up to a multiple
    of 32; a mask the size of its image is padded with it, any other mask (an original-resolution mask in
    evaluation) to the largest mask; padding is the ignore index, so it never counts."""
    images, targets, sizes = zip(*batch, strict=True)
    side = (round_up(max(i.shape[0] for i in images)), round_up(max(i.shape[1] for i in images)))
    if targets[0].ndim == 2:
        aligned = [tuple(t.shape) == tuple(i.shape[:2]) for i, t in zip(images, targets, strict=True)]
        mask_side = [side if a else tuple(t.shape) for a, t in zip(aligned, targets, strict=True)]
        top = (max(s[0] for s in mask_side), max(s[1] for s in mask_side))
        targets = tuple(F.pad(t, (0, top[1] - t.shape[1], 0, top[0] - t.shape[0]), value=ignore_index) for t in targets)
    images = tuple(pad_to(i, None, side, ignore_index)[0] for i in images)
    return torch.stack(images), torch.stack(targets), torch.stack(sizes)
