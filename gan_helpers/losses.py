"""The seed's adversarial losses: binary cross-entropy against valid (1) / fake (0) labels.

BCE for one prediction o in (0, 1) and label t in {0, 1} is
``-(t * log(o) + (1 - t) * log(1 - o))``, averaged over the batch. Two forms:

- ``"bce"``: D ends in a sigmoid and outputs probabilities; ``nn.BCELoss`` (as
  ``BCELoss`` below, which also says what to do when it is handed logits).
- ``"bce-logits"``: D outputs raw logits; ``nn.BCEWithLogitsLoss`` applies the sigmoid
  inside, in a numerically stable way (log-sum-exp), so saturated logits still give
  finite losses and useful gradients.

The seed switches between them on one line of gan.py; here the switch is ``loss=``.

One-sided label smoothing (Salimans et al. 2016, "Improved Techniques for Training
GANs") scores D's predictions on real images against a target a little below 1, such
as 0.9 (``real_label``), and leaves the fake target at 0 and G's valid label at 1. A D
that is never rewarded for full certainty about a real digit stops pushing its outputs
to the extremes, which is meant to keep its feedback to G informative once it starts to
know the training digits by heart. The seed uses 1.

The R1 penalty (Mescheder, Geiger & Nowozin 2018, "Which Training Methods for GANs do
actually Converge?") is not part of the seed's loss: an extra term for D, the squared
length of the gradient of D's score with respect to real images. A D that is flat around
the real digits cannot grow ever more certain of them by sharpening its boundary there,
which is what lets a GAN's game settle instead of circling; ``r1_penalty`` computes it
and ``step.r1_step`` applies it.
"""

from __future__ import annotations

import torch
from torch import nn

LOSS_NAMES = ("bce", "bce-logits")


class BCELoss(nn.BCELoss):
    """``nn.BCELoss`` (same numbers, same gradients) whose refusal of predictions outside
    [0, 1] says what they probably are, logits, and which loss takes them."""

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        try:
            return super().forward(prediction, target)
        except RuntimeError as err:
            # Checked only once BCELoss has refused, so a training step pays nothing.
            if "between 0 and 1" not in str(err) or torch.isnan(prediction).any():
                raise  # NaN probabilities: training diverged (GANTrainer reports it)
            low, high = prediction.min().item(), prediction.max().item()
            raise ValueError(
                f"BCELoss got D's outputs from {low:.3g} to {high:.3g}, but it takes "
                "probabilities in [0, 1]. A D without a final sigmoid outputs logits: score "
                "them with BCEWithLogitsLoss (adversarial_loss('bce-logits')), or end D in a "
                "sigmoid (the course's discriminators: logits=False)."
            ) from err


def adversarial_loss(loss: str = "bce") -> nn.Module:
    """The criterion for ``loss``: ``BCELoss()`` (``nn.BCELoss`` with an error that names
    the fix when given logits) or ``nn.BCEWithLogitsLoss()``."""
    if loss == "bce":
        return BCELoss()
    if loss == "bce-logits":
        return nn.BCEWithLogitsLoss()
    raise ValueError(f"unknown loss {loss!r}: choose one of {', '.join(LOSS_NAMES)}")


def uses_logits(loss: str) -> bool:
    """True when the discriminator must output logits (no sigmoid) for ``loss``."""
    adversarial_loss(loss)  # validates the name
    return loss == "bce-logits"


def generator_loss(criterion: nn.Module, d_on_fake: torch.Tensor) -> torch.Tensor:
    """G's loss: D's predictions on fakes, shape (N, 1), against the *valid* label 1.

    G wants D to call its images real, so it is scored against 1 (the non-saturating
    loss of Goodfellow et al.). Returns a scalar >= 0; log 2 ~ 0.693 when D(G(z)) = 0.5.
    """
    return criterion(d_on_fake, torch.ones_like(d_on_fake))


def discriminator_loss(
    criterion: nn.Module, d_on_real: torch.Tensor, d_on_fake: torch.Tensor,
    real_label: float = 1.0,
) -> torch.Tensor:
    """D's loss: (loss on real vs 1 + loss on fake vs 0) / 2, both inputs (N, 1).

    ``real_label`` in (0.5, 1] is the target for real images: 1 as in the seed, or a
    little less for one-sided label smoothing (module docstring). Returns a scalar;
    log 2 ~ 0.693 at the equilibrium where D outputs 0.5 on both. With ``real_label``
    below 1 the real half cannot reach 0: its minimum is the entropy of ``real_label``.
    """
    if not 0.5 < real_label <= 1.0:
        raise ValueError(
            f"real_label must be in (0.5, 1], got {real_label}: 1 is the seed's valid label, "
            "0.9 the usual one-sided smoothing"
        )
    real_loss = criterion(d_on_real, torch.full_like(d_on_real, real_label))
    fake_loss = criterion(d_on_fake, torch.zeros_like(d_on_fake))
    return (real_loss + fake_loss) / 2


def r1_penalty(discriminator: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """The R1 penalty: ||d logit(x) / d x||^2 per real image, averaged over the batch.

    real: (N, 1, 28, 28) in [-1, 1]; ``discriminator`` must have a ``logit`` method
    (D's score before any sigmoid; the course's discriminators have one). Returns a
    scalar >= 0 whose graph reaches D's weights (a gradient of a gradient), so that
    ``backward`` on it trains D to keep its score flat around real images.
    """
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator.logit(x).sum(), x, create_graph=True)
    return grad.pow(2).sum(list(range(1, grad.dim()))).mean()
