"""The seed's training step, and the pieces a run builds around it.

``train_step`` is one step exactly as the seed's gan.py takes it: the generator first
(its own ``zero_grad``, loss against the valid label, backward, step), then the
discriminator on the real batch and on the *detached* fake batch (its own
``zero_grad``, (real + fake) / 2, backward, step). ``r1_step`` is the R1 penalty's
extra D update; ``train_briefly`` a short run the seed's way, for the assignments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .config import R1_EVERY, TrainConfig
from .data import ImageSet, ShuffledBatches, load_images
from .losses import adversarial_loss, discriminator_loss, generator_loss, r1_penalty
from .models import device_of, noise_size

@dataclass
class StepStats:
    """What one training step measured (all 0-dim float tensors, detached).

    g_loss, d_loss: the two losses (>= 0; log 2 ~ 0.693 at equilibrium).
    d_real: mean D(x) on the real batch, a probability in [0, 1].
    d_fake: mean D(G(z)) on the fake batch in the D step, in [0, 1]; 0.5 at equilibrium.
    """

    g_loss: torch.Tensor
    d_loss: torch.Tensor
    d_real: torch.Tensor
    d_fake: torch.Tensor


def train_step(
    generator: nn.Module,
    discriminator: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    criterion: nn.Module,
    real: torch.Tensor,
    z: torch.Tensor,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    real_label: float = 1.0,
) -> StepStats:
    """One step of the seed's loop: train G, then D, never both at once.

    real: (B, 1, 28, 28) in [-1, 1]; z: (B, latent_dim) ~ N(0, 1), one vector per real
    image. ``augment``, if given, maps a batch of images to a transformed batch of the
    same shape; D then sees only transformed images, real and fake, in both steps
    (``gan_helpers.augment``). ``real_label`` is D's target for real images (1, or
    less for one-sided label smoothing). Returns the step's losses and mean D outputs
    as probabilities.
    """
    seen_by_d = augment if augment is not None else _unchanged
    # ---- Generator: make D call the fakes valid (label 1). ----
    opt_g.zero_grad(set_to_none=True)
    fake = generator(z)
    # D's weights need no gradient here (the seed computes one and its D zero_grad
    # throws it away); freezing them skips that work. Gradients still flow through D
    # to G, and D's weights are untouched by this step either way.
    discriminator.requires_grad_(False)
    try:
        g_loss = generator_loss(criterion, discriminator(seen_by_d(fake)))
        g_loss.backward()
    finally:
        discriminator.requires_grad_(True)
    opt_g.step()

    # ---- Discriminator: real -> 1, fake -> 0. detach() stops D's loss reaching G. ----
    opt_d.zero_grad(set_to_none=True)
    if _mixes_batch(discriminator):
        # BatchNorm normalises over the batch, so real and fake must pass separately.
        d_on_real = discriminator(seen_by_d(real))
        d_on_fake = discriminator(seen_by_d(fake.detach()))
    else:
        # Without BatchNorm one pass over both halves is the same maths as two passes
        # (each image is scored alone) and runs as larger, faster matrix products.
        both = seen_by_d(torch.cat([real, fake.detach()]))
        d_on_real, d_on_fake = discriminator(both).split([real.shape[0], fake.shape[0]])
    d_loss = discriminator_loss(criterion, d_on_real, d_on_fake, real_label)
    d_loss.backward()
    opt_d.step()

    with torch.no_grad():
        as_prob = torch.sigmoid if isinstance(criterion, nn.BCEWithLogitsLoss) else (lambda t: t)
        return StepStats(
            g_loss.detach(), d_loss.detach(),
            as_prob(d_on_real).mean(), as_prob(d_on_fake).mean(),
        )


def r1_step(
    discriminator: nn.Module, opt_d: torch.optim.Optimizer, real: torch.Tensor,
    gamma: float, every: int = R1_EVERY,
) -> torch.Tensor:
    """One extra update of D on the R1 penalty alone (``losses.r1_penalty``), weighted
    ``gamma / 2``, for a run that applies it every ``every`` steps: the weight is
    multiplied by ``every`` so that it counts as much as a penalty in every step (lazy
    regularisation, as in StyleGAN2). real: (B, 1, 28, 28) in [-1, 1], the step's real
    batch. Returns the penalty before weighting (detached, >= 0)."""
    opt_d.zero_grad(set_to_none=True)
    penalty = r1_penalty(discriminator, real)
    (gamma / 2 * penalty * every).backward()
    opt_d.step()
    return penalty.detach()


def make_optimizer(
    module: nn.Module, config: TrainConfig, lr: float | None = None
) -> torch.optim.Adam:
    """Adam with the config's betas and ``lr`` (default ``config.lr``). The course recipe
    uses the fused kernel (one pass over all parameters instead of a loop of small ops);
    same update rule."""
    return torch.optim.Adam(
        module.parameters(), lr=config.lr if lr is None else lr, betas=(config.b1, config.b2),
        fused=config.recipe == "course" or None,
    )


def train_briefly(
    generator: nn.Module,
    discriminator: nn.Module,
    steps: int,
    step: Callable = train_step,
    data: ImageSet | None = None,
    seed: int = 0,
) -> object:
    """Train a pair of networks for ``steps`` steps the seed's way: a quick look at
    networks or a training step written elsewhere (the assignments' "Try it" cells).

    Each network gets Adam with the seed's lr 0.0002 and betas (0.5, 0.999); the loss
    is BCE on a sigmoid. Each step is one call ``step(generator, discriminator, opt_g,
    opt_d, criterion, real, z)``, as ``train_step`` takes them, with a shuffled batch of
    64 real images (64, 1, 28, 28) in [-1, 1] from ``data`` (default ``load_images()``),
    epoch after epoch, and noise z (64, latent_dim) ~ N(0, 1) drawn from ``seed``.
    Returns what the last call returned.
    """
    config = TrainConfig.for_recipe("seed", seed=seed)
    opt_g, opt_d = make_optimizer(generator, config), make_optimizer(discriminator, config)
    criterion = adversarial_loss(config.loss)
    images = (data if data is not None else load_images()).scaled()
    batches = ShuffledBatches(images, config.batch_size, seed=seed)
    noise = torch.Generator().manual_seed(seed)
    latent_dim = noise_size(generator)
    result, done = None, 0
    for epoch in range(math.ceil(steps / batches.steps_per_epoch)):
        for real in batches.epoch(epoch):
            if done == steps:
                break
            z = torch.randn(len(real), latent_dim, generator=noise)
            result = step(generator, discriminator, opt_g, opt_d, criterion, real, z)
            done += 1
    return result


@torch.no_grad()
def standing_statistics(
    generator: nn.Module, n: int = 2048, batch_size: int = 256, seed: int = 0
) -> nn.Module:
    """Recompute the BatchNorm running statistics of ``generator``, in place, from its
    own activations on ``n`` noise vectors z ~ N(0, 1), fed in batches of shape
    (batch_size, latent_dim); returns ``generator`` (its train/eval mode unchanged).

    BigGAN's "standing statistics" (Brock et al. 2019). A weight average of G has
    weights that no G ever had, so the running means and variances G gathered for its
    own, moving weights do not fit it: in eval mode its layers would be normalised with
    the wrong numbers. This passes noise through the generator in train mode and keeps,
    for each BatchNorm layer, the average of the batches' means and variances (PyTorch's
    ``torch.optim.swa_utils.update_bn``, which SWA uses for the same reason). The same
    ``seed`` and weights give the same statistics. Without BatchNorm layers nothing
    changes.
    """
    from torch.optim.swa_utils import update_bn

    rng = torch.Generator().manual_seed(seed)
    device = device_of(generator)
    sizes = [min(batch_size, n - i) for i in range(0, n, batch_size)]
    update_bn(
        (torch.randn(size, noise_size(generator), generator=rng).to(device) for size in sizes),
        generator,
    )
    return generator


def _unchanged(images: torch.Tensor) -> torch.Tensor:
    return images


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _mixes_batch(module: nn.Module) -> bool:
    """Whether ``module``'s output for one image depends on the rest of its batch
    (BatchNorm, or a layer marked ``mixes_batch``, such as the toy GAN's MinibatchStd)."""
    return _has_batchnorm(module) or any(getattr(m, "mixes_batch", False) for m in module.modules())
