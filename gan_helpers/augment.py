"""Differentiable augmentation of everything the discriminator sees (DiffAugment).

With the 10,000 digits shipped offline, D sees every training image hundreds of times in
a long run and starts to recognise the training set itself rather than what digits look
like; its feedback to G then gets worse, and long runs drift into mode collapse.
Zhao et al. (2020, "Differentiable Augmentation for Data-Efficient GAN Training") and
Karras et al. (2020, ADA) fix this by showing D randomly transformed images: real and
fake alike, in D's step and in G's step. Because the fakes are transformed too, G is not
pushed to draw transformed digits; it still learns plain, centred ones. Because the
transform is differentiable, G's gradient passes through it.

The course uses DiffAugment's *translation*: each image moves by a random whole number of
pixels, the gap filled with background (-1, black). It is the augmentation that suits
MNIST: a digit shifted by two pixels is still the same digit. The course FC recipe
shifts by up to 1 pixel for its first 10,000 steps and by up to 2 after that
(``TrainConfig.augment_ramp``): the gentler shift lets G learn faster while D does not
yet know the digits by heart, and the full one keeps long runs from drifting.
"""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=8)
def _shift_table(max_shift: int, size: int) -> torch.Tensor:
    """Index table (K, size*size) into an image padded by ``max_shift`` on each side: row
    k reads the image moved by the k-th of the K = (2*max_shift + 1)**2 shifts."""
    padded = size + 2 * max_shift
    offsets = torch.arange(-max_shift, max_shift + 1)
    rows = torch.arange(size)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    # Output pixel (r, c) of an image moved by (dy, dx) reads input pixel (r - dy, c - dx).
    source_r = rows.view(1, size, 1) - dy.reshape(-1, 1, 1) + max_shift
    source_c = rows.view(1, 1, size) - dx.reshape(-1, 1, 1) + max_shift
    return (source_r * padded + source_c).reshape(len(offsets) ** 2, size * size)


def translate(
    images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Move each image by its own random (dy, dx), each in [-max_shift, max_shift] pixels.

    images: (N, C, H, W) with H == W, background at -1 (data scaled to [-1, 1]).
    Returns a new tensor of the same shape and range; pixels moved in from outside are
    -1. Differentiable in ``images`` (a gather), so G's gradient passes through it.
    ``generator`` draws the shifts (the trainer passes its own, saved in checkpoints, so
    a resumed run draws the same shifts). ``max_shift=0`` returns ``images`` unchanged.
    """
    if max_shift < 0:
        raise ValueError(f"max_shift must be 0 or more pixels, got {max_shift}")
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(
            f"translate expects square images (N, C, H, W), got {tuple(images.shape)}; "
            "reshape flat (N, 784) batches with x.view(-1, 1, 28, 28) first."
        )
    if max_shift == 0:
        return images
    n, channels, size, _ = images.shape
    table = _shift_table(max_shift, size).to(images.device)
    # torch.randint must draw on its generator's own device.
    rng_device = generator.device if generator is not None else images.device
    choice = torch.randint(len(table), (n,), generator=generator, device=rng_device)
    padded = torch.nn.functional.pad(images, (max_shift,) * 4, value=-1.0)
    flat = padded.reshape(n, channels, -1)
    # index_select rather than table[choice]: the same rows, several times faster.
    rows = table.index_select(0, choice.to(images.device))
    index = rows.unsqueeze(1).expand(n, channels, size * size)
    return flat.gather(2, index).view(n, channels, size, size)


__all__ = ["translate"]
