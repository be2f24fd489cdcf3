"""The check of BCE and the two GAN losses: values, labels, averaging, the graph."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .. import losses as reference_losses
from .exercise import Mistake
from .probes import _FunctionLog


def _one_loss(name: str, value) -> torch.Tensor:
    """A loss function's result, which must be one number as a tensor (backward() needs
    the tensor, not its .item())."""
    if value is None:
        raise Mistake(f"{name} returns None: end it with return, giving the loss.")
    if not torch.is_tensor(value):
        raise Mistake(
            f"{name} returns a {type(value).__name__}, not a tensor: return the loss tensor "
            "itself (no .item() or float()), so that backward() can follow it to the weights.")
    if value.numel() != 1:
        raise Mistake(f"{name} returns {value.numel()} numbers (shape {tuple(value.shape)}): "
                      "a loss is one number, the mean over the batch.")
    return value


_MINIMAX = (
    "the generator loss is the minimax one, -BCE(D(G(z)), 0), which minimises "
    "log(1 - D(G(z))): its gradient vanishes while D still spots every fake, early in "
    "training (notebook 3). The seed uses the non-saturating loss: BCE of D(G(z)) against "
    "the valid label, torch.ones_like(d_on_fake).")


_SIGMOID_IN_LOSS = (
    "{name} applies a sigmoid to D's output: D already ends in one for nn.BCELoss (its "
    "outputs are probabilities), and BCEWithLogitsLoss applies it inside. Pass D's output "
    "to the criterion as it is.")


_D_LOSS = "; D's loss is (BCE(D(real), valid) + BCE(D(fake.detach()), fake)) / 2."
_D_SWAPPED = ("D's labels are the wrong way round: real images must be scored against valid "
              "(1) and G's fakes against fake (0)" + _D_LOSS)
_D_NO_FAKE = "D's loss leaves out the fake batch, so D never learns what G's images look like" + _D_LOSS
_D_NO_REAL = "D's loss leaves out the real batch, so D never learns what real digits look like" + _D_LOSS
_D_HALF_HALVED = ("only one half of D's loss is divided by 2: in real_loss + fake_loss / 2 the "
                  "division binds before the addition. Bracket the sum: (real_loss + fake_loss) / 2.")


def _with_logits(name: str, loss: Callable, *args) -> tuple[torch.Tensor, str]:
    """``loss(*args)`` as one number, or NaN and the words of the error it raised (for
    the advice), so that both lead to the same diagnosis: nn.BCELoss refuses logits with
    a RuntimeError, the course's ``adversarial_loss("bce")`` with a ValueError."""
    try:
        return _one_loss(name, loss(*args)), ""
    except (RuntimeError, ValueError) as err:
        return torch.tensor(float("nan")), f" (with BCEWithLogitsLoss it raised: {err})"


_OFF_THE_GRAPH = ("it left PyTorch's graph (NumPy, .item(), .detach() or a new torch.tensor(...) "
                  "on the way), so backward() cannot reach the networks through it. Compute "
                  "it with torch operations on the tensors it is given.")


def _check_differentiable(name: str, loss: Callable, args: tuple, wrt: tuple[int, ...]) -> None:
    """``loss(*args)`` must carry a gradient back to the arguments at ``wrt`` (D's
    outputs), and ``bce`` the same one as nn.BCELoss: the right number computed off the
    graph trains nothing."""
    args = tuple(a.clone().requires_grad_() if i in wrt else a for i, a in enumerate(args))
    value = loss(*args)
    if not (torch.is_tensor(value) and value.requires_grad):
        raise Mistake(f"{name} gives the right number but no gradient: {_OFF_THE_GRAPH}")
    if name == "bce":
        o, t = args
        got = torch.autograd.grad(value, o)[0]
        expected = torch.autograd.grad(nn.BCELoss()(o, t), o)[0]
        if not torch.allclose(got, expected, atol=1e-4, rtol=1e-3):
            raise Mistake("bce gives the right number but not BCE's gradient with respect to "
                          "o: keep o in the formula, -mean(t * log(o) + (1 - t) * log(1 - o)).")


def _check_bce(bce: Callable) -> None:
    """bce(o, t): the formula by hand, its sign, its mean, its graph."""
    o = torch.tensor([[0.9], [0.2], [0.6], [0.05]])
    t = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    expected = nn.BCELoss()(o, t)
    log = _FunctionLog()
    with log:
        got = _one_loss("bce", bce(o, t))
    library = {"binary_cross_entropy", "binary_cross_entropy_with_logits"} & {name for name, _, _ in log.calls}
    if library:
        raise Mistake(
            f"bce calls PyTorch's own BCE ({library.pop()}, which nn.BCELoss runs): the "
            "exercise is the formula by hand, -mean(t * log(o) + (1 - t) * log(1 - o)), "
            "with torch.log. nn.BCELoss is what the check compares it with.")
    if torch.isclose(got, -expected * 1, atol=1e-5) and not torch.isclose(got, expected):
        raise Mistake("bce has the wrong sign: log(o) is negative, so the loss is -mean(...).")
    if torch.isclose(got, expected * len(o), atol=1e-4):
        raise Mistake("bce sums over the batch; the seed's formula takes the mean (1/n).")
    # Python's precedence: in -t * log(o) + ... the minus sign reaches the first term only.
    first_negated = (-(t * torch.log(o)) + (1 - t) * torch.log(1 - o)).mean()
    if any(torch.isclose(got, first_negated * k, atol=1e-4) for k in (1, len(o))):
        raise Mistake(
            "bce negates only its first term: in -t * log(o) + (1 - t) * log(1 - o) the "
            "minus sign belongs to t * log(o) alone. Put both terms in brackets: "
            "-(t * log(o) + (1 - t) * log(1 - o)).mean().")
    if not torch.isclose(got, expected, atol=1e-5):
        raise Mistake(
            f"bce gives {got.item():.4f} where BCE is {expected.item():.4f}: it is "
            "-mean(t * log(o) + (1 - t) * log(1 - o))."
        )
    _check_differentiable("bce", bce, (o, t), wrt=(0,))


def _check_g_loss(generator_loss: Callable, criterion, d_fake: torch.Tensor) -> None:
    """generator_loss: BCE of D(G(z)) against the valid label."""
    ref_g = reference_losses.generator_loss(criterion, d_fake)
    g = _one_loss("generator_loss", generator_loss(criterion, d_fake))
    if torch.isclose(g, criterion(d_fake, torch.zeros_like(d_fake)), atol=1e-5):
        raise Mistake(
            "the generator loss uses the fake label 0. G wants D to call its images real, "
            "so score D(G(z)) against the valid label: torch.ones_like(d_on_fake)."
        )
    if torch.isclose(g, -criterion(d_fake, torch.zeros_like(d_fake)), atol=1e-5):
        raise Mistake(_MINIMAX)
    if torch.isclose(g, criterion(torch.sigmoid(d_fake), torch.ones_like(d_fake)), atol=1e-5):
        raise Mistake(_SIGMOID_IN_LOSS.format(name="generator_loss"))
    if not torch.isclose(g, ref_g, atol=1e-5):
        raise Mistake(f"generator_loss gives {g.item():.4f}, expected {ref_g.item():.4f}: BCE of D(G(z)) against ones.")
    _check_differentiable("generator_loss", generator_loss, (criterion, d_fake), wrt=(1,))


def _check_d_loss(discriminator_loss: Callable, criterion, d_real: torch.Tensor,
                  d_fake: torch.Tensor) -> None:
    """discriminator_loss: (BCE(real, 1) + BCE(fake, 0)) / 2."""
    real_part = criterion(d_real, torch.ones_like(d_real))
    fake_part = criterion(d_fake, torch.zeros_like(d_fake))
    d = _one_loss("discriminator_loss", discriminator_loss(criterion, d_real, d_fake))
    if torch.isclose(d, real_part + fake_part, atol=1e-5):
        raise Mistake("the discriminator loss is real + fake; the seed averages them: (real_loss + fake_loss) / 2.")
    for halved, kept in ((fake_part, real_part), (real_part, fake_part)):
        if torch.isclose(d, kept + halved / 2, atol=1e-5):
            raise Mistake(_D_HALF_HALVED)
    if torch.isclose(d, (criterion(d_real, torch.zeros_like(d_real)) + criterion(d_fake, torch.ones_like(d_fake))) / 2, atol=1e-5):
        raise Mistake(_D_SWAPPED)
    for half, advice in ((real_part, _D_NO_FAKE), (fake_part, _D_NO_REAL)):
        if torch.isclose(d, half, atol=1e-5) or torch.isclose(d, half / 2, atol=1e-5):
            raise Mistake(advice)
    squashed = (criterion(torch.sigmoid(d_real), torch.ones_like(d_real))
                + criterion(torch.sigmoid(d_fake), torch.zeros_like(d_fake))) / 2
    if torch.isclose(d, squashed, atol=1e-5):
        raise Mistake(_SIGMOID_IN_LOSS.format(name="discriminator_loss"))
    if not torch.isclose(d, (real_part + fake_part) / 2, atol=1e-5):
        raise Mistake(
            f"discriminator_loss gives {d.item():.4f}, expected {((real_part + fake_part) / 2).item():.4f}: "
            "(BCE(real vs 1) + BCE(fake vs 0)) / 2."
        )
    _check_differentiable("discriminator_loss", discriminator_loss, (criterion, d_real, d_fake),
                          wrt=(1, 2))


def _check_any_criterion(generator_loss: Callable, discriminator_loss: Callable) -> None:
    """Both losses with BCEWithLogitsLoss on logits, where a loss that builds its own
    BCE gives other numbers or, as nn.BCELoss outside [0, 1] does, raises."""
    logits_loss = nn.BCEWithLogitsLoss()
    logits, real_logits = torch.tensor([[2.0], [-1.0], [0.5]]), torch.tensor([[1.5], [-0.5], [3.0]])
    with_logits, failure = _with_logits("generator_loss", generator_loss, logits_loss, logits)
    if torch.isclose(with_logits, logits_loss(torch.sigmoid(logits), torch.ones_like(logits)), atol=1e-5):
        raise Mistake(
            "double sigmoid: your generator_loss applies a sigmoid before BCEWithLogitsLoss, "
            "which applies it again. Pass D's raw output to the criterion."
        )
    if not torch.isclose(with_logits, reference_losses.generator_loss(logits_loss, logits), atol=1e-5):
        raise Mistake(f"generator_loss must work with any criterion{failure}: call "
                      "criterion(d_on_fake, ones), not a BCE of its own.")
    d_with_logits, failure = _with_logits(
        "discriminator_loss", discriminator_loss, logits_loss, real_logits, logits)
    if not torch.isclose(d_with_logits, reference_losses.discriminator_loss(
            logits_loss, real_logits, logits), atol=1e-5):
        raise Mistake(f"discriminator_loss must work with any criterion{failure}: call "
                      "criterion(d_on_real, ones) and criterion(d_on_fake, zeros), not a BCE "
                      "of its own.")


def _check_losses(bce: Callable, generator_loss: Callable, discriminator_loss: Callable) -> list[str]:
    """The losses exercise: ``bce``, then G's and D's losses on probabilities, then on
    logits with BCEWithLogitsLoss."""
    _check_bce(bce)
    criterion = nn.BCELoss()
    d_fake = torch.tensor([[0.3], [0.8], [0.1]])
    d_real = torch.tensor([[0.7], [0.9], [0.4]])
    _check_g_loss(generator_loss, criterion, d_fake)
    _check_d_loss(discriminator_loss, criterion, d_real, d_fake)
    _check_any_criterion(generator_loss, discriminator_loss)
    return ["bce matches the formula; G against valid labels; D loss is (real + fake) / 2"]
