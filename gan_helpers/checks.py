"""Checks for the course's exercises: run a student's code on controlled inputs and say,
in plain words, which common GAN mistake it makes and how to fix it.

In a notebook, in the manner of Kaggle's learntools:

    from gan_helpers.checks import generator_exercise as ex1
    ex1.check(FCGenerator)     # prints feedback; raises NotYet until it passes
    ex1.hint()
    ex1.solution()             # the package's reference code

or the short forms ``check_generator(FCGenerator)``, ``check_discriminator(...)``,
``check_losses(bce, generator_loss, discriminator_loss)``, ``check_train_step(fn)``,
``check_dcgan_generator(cls)``, ``check_dcgan_discriminator(cls)``. Checks never raise:
code that is not written yet (``NotImplementedError``) or that crashes gets a message, not
a traceback. Given an instance instead of a class, they work on a copy of it, so the
student's network leaves the check as it came (mode and weights).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import losses as reference_losses
from . import models as reference_models
from . import step as reference_step


@dataclass
class CheckResult:
    """The outcome of one check: ``passed``, and the feedback lines for the student."""

    name: str
    passed: bool
    feedback: list[str] = field(default_factory=list)

    @property
    def score(self) -> int:
        return int(self.passed)

    def __str__(self) -> str:
        head = f"[{self.name}] " + ("correct" if self.passed else "not yet")
        return "\n".join([head] + [f"  - {line}" for line in self.feedback])


class Mistake(Exception):
    """Raised inside a check to report one diagnosed mistake."""


class NotYet(AssertionError):
    """Raised by a check cell whose exercise is not solved yet, after its feedback, so
    that nbgrader's autograder (and any runner) counts the cell as failed."""


_SOLUTIONS_CLOSED = False


def close_solutions() -> None:
    """Make every exercise's ``.solution()`` say that solutions are closed (the first
    cell of a notebook released with ``release --no-solutions`` calls this)."""
    global _SOLUTIONS_CLOSED
    _SOLUTIONS_CLOSED = True


def _linear_sizes(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def _build(cls_or_obj, *args, **kwargs):
    """Instantiate a class (or call a factory); copy instances, which the checks may put
    in eval mode or change. The checks feed CPU tensors, so a model moved to a GPU (in
    the notebook or in its own ``__init__``) is checked on a copy on the CPU."""
    if isinstance(cls_or_obj, nn.Module):
        model = copy.deepcopy(cls_or_obj)
    else:
        model = cls_or_obj(*args, **kwargs)
    return model.cpu() if isinstance(model, nn.Module) else model


def _run_hooked(model: nn.Module, x: torch.Tensor, register: Callable):
    """Run ``model`` on ``x`` (no grad) with the hooks that ``register(module)`` returns
    (a list) for each of its modules, removed afterwards; returns what the model gave."""
    hooks = [h for m in model.modules() for h in register(m)]
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for h in hooks:
            h.remove()


def _run_leaves(model: nn.Module, x: torch.Tensor) -> list[tuple]:
    """Run ``model`` on ``x``; (module, input, output) of each leaf module, in the order
    they ran. Clones: an inplace activation would otherwise overwrite what was recorded."""
    ran = []

    def register(m: nn.Module) -> list:
        if any(True for _ in m.children()):
            return []
        seen = {}
        return [m.register_forward_pre_hook(
                    lambda _, a: seen.__setitem__("in", a[0].detach().clone())),
                m.register_forward_hook(
                    lambda mod, a, out: ran.append((mod, seen.pop("in"), out.detach().clone())))]

    _run_hooked(model, x, register)
    return ran


def _execution_order(model: nn.Module, x: torch.Tensor) -> list[nn.Module]:
    """The leaf modules of ``model`` in the order they run on ``x``."""
    return [m for m, _, _ in _run_leaves(model, x)]


def _links(model: nn.Module, x: torch.Tensor, kind: type) -> list[list[tuple]]:
    """Run ``model`` on ``x``; for each pair of consecutive ``kind`` layers (in the order
    they ran), the (before, after) tensor pairs that lead from the first one's output to
    the second one's input: each leaf module that ran in between (what it received and
    gave) and each stretch of plain code (what one module gave and the next received)."""
    ran = _run_leaves(model, x)
    at = [i for i, (m, _, _) in enumerate(ran) if isinstance(m, kind)]
    chains = []
    for i, j in zip(at, at[1:]):
        values = [ran[i][2]] + [t for _, a, out in ran[i + 1:j] for t in (a, out)] + [ran[j][1]]
        chains.append(list(zip(values, values[1:])))
    return chains


def _same(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> bool:
    """Whether ``b`` holds the values of ``a`` (in any shape of as many elements)."""
    return a.numel() == b.numel() and torch.allclose(b, a.reshape(b.shape), atol=atol)


def _is_relu(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the step a -> b is a ReLU that shows as one: some inputs were negative."""
    return bool((a < -1e-3).any()) and _same(torch.relu(a), b)


def _is_leaky_relu(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the step a -> b is a LeakyReLU of any slope in (0, 0.9): inputs >= 0
    pass unchanged, negative ones are all scaled by the same small factor."""
    if a.numel() != b.numel():
        return False
    b = b.reshape(a.shape)
    negative = a < -1e-3
    if not negative.any() or not _same(a[a >= 0], b[a >= 0]):
        return False
    ratio = b[negative] / a[negative]
    return 0 < ratio.min().item() and ratio.max().item() < 0.9 and torch.allclose(
        ratio, ratio.median().expand_as(ratio), atol=1e-3)


def _check_leaky_relu_between(links: list[tuple], k: int, layer: str) -> None:
    """Somewhere on the way from layer k to layer k + 1 (``links``, from ``_links``),
    LeakyReLU(0.2) must be applied, as a module or as a function, before or after a
    BatchNorm. A ReLU, no activation and another slope each get their own message."""
    # On inputs >= 0 LeakyReLU changes nothing, so a step only counts as one if its
    # input had negative values (after a ReLU, what follows would look like one).
    if not links or any((a < -1e-3).any() and _same(nn.functional.leaky_relu(a, 0.2), b)
                        for a, b in links):
        return
    if not all(a.numel() == b.numel() for a, b in links):
        return  # a size mismatch, which the size checks speak to
    if _same(links[0][0], links[-1][1]):
        raise Mistake(f"no activation after {layer} {k}: the seed puts nn.LeakyReLU(0.2) "
                      "after each hidden layer; without it the layers collapse into one linear map.")
    for a, b in links:
        a = a.reshape(b.shape)
        negative = a < -1e-3
        if not negative.any() or _same(a, b):
            continue
        if _is_relu(a, b):
            raise Mistake(f"ReLU after {layer} {k}: use nn.LeakyReLU(0.2), as the seed does; "
                          "its small negative slope keeps units from dying (notebook 2).")
        if _is_leaky_relu(a, b):
            slope = (b[negative] / a[negative]).median().item()
            raise Mistake(f"LeakyReLU with slope {slope:.2g} after {layer} {k}: the seed "
                          "uses nn.LeakyReLU(0.2) (PyTorch's default slope is 0.01).")
    raise Mistake(f"no LeakyReLU after {layer} {k}: the seed uses nn.LeakyReLU(0.2) "
                  "after each hidden layer.")


def _check_leaky_relus(model: nn.Module, x: torch.Tensor, kind: type = nn.Linear,
                       layer: str = "hidden layer") -> None:
    """Between each pair of consecutive ``kind`` layers (in the order they run), the
    next one must receive LeakyReLU(0.2) of the previous one's output, possibly with
    BatchNorm before or after it. Checked on the numbers, so ``F.leaky_relu(h, 0.2)``
    counts as much as ``nn.LeakyReLU(0.2)``."""
    for k, links in enumerate(_links(model, x, kind), start=1):
        _check_leaky_relu_between(links, k, layer)


def _last_output(model: nn.Module, x: torch.Tensor, kind: type) -> tuple[torch.Tensor | None, torch.Tensor]:
    """What the last ``kind`` layer to run on ``x`` gave (None if none ran), and what the
    model gave, from one run: a dropout draws new masks at every run."""
    outs: list = []
    result = _run_hooked(model, x, lambda m: [m.register_forward_hook(
        lambda _, a, out: outs.append(out.detach().clone()))] if isinstance(m, kind) else [])
    return (outs[-1] if outs else None), result


def _check_tanh_output(g: nn.Module, z: torch.Tensor, kind: type) -> None:
    """G's output on ``z`` must be tanh of its last ``kind`` layer's output, judged on
    the numbers: a sigmoid, a clamp or tanh / 2 also stay within [-1, 1]."""
    last, out = _last_output(g, z, kind)
    if last is None or _same(torch.tanh(last), out):
        return
    if out.min() >= 0:
        raise Mistake(
            f"output never below 0 (smallest value {out.min():.2f}): a sigmoid draws in "
            "[0, 1], but the real images are scaled to [-1, 1], their background at -1, "
            "so D tells G's images apart at a glance. End G in nn.Tanh() instead.")
    raise Mistake(
        "output is not tanh of the last layer's output: end G in nn.Tanh() (or torch.tanh) "
        "straight after its last layer. tanh draws on the real images' scale, [-1, 1], and "
        "passes a gradient everywhere; a clamp or hardtanh passes none beyond -1 and 1, and "
        "a scaled tanh cannot reach the -1 of the background.")


def _check_not_softmax(p: torch.Tensor) -> None:
    """D's outputs ``p`` all exactly 1 are a softmax over one value."""
    if bool((p == 1).all()):
        raise Mistake(
            "every output is exactly 1: a softmax over D's one output is always 1, so D "
            "cannot say fake. End D in nn.Sigmoid(), which gives each image its own probability.")


def _check_sigmoid_output(d: nn.Module, x: torch.Tensor, kind: type) -> None:
    """D's output on ``x``, within (0, 1), must be the sigmoid of its last ``kind``
    layer's output, judged on the numbers: two sigmoids also stay within (0, 1)."""
    last, p = _last_output(d, x, kind)
    if last is None or _same(torch.sigmoid(last), p):
        return
    raise Mistake(
        "output is not the sigmoid of the last layer's output: end D in one nn.Sigmoid() "
        "straight after its last layer (a second sigmoid squeezes every answer into "
        "0.27 .. 0.73, so D can never be sure).")


# --------------------------------------------------------------------- the checks
def _check_generator(student) -> list[str]:
    g = _build(student)
    sizes = _linear_sizes(g)
    expected = [(100, 128), (128, 256), (256, 512), (512, 784)]
    if sizes != expected:
        raise Mistake(
            f"wrong layer sizes: the seed's generator is 100 -> 128 -> 256 -> 512 -> 784, "
            f"your linear layers are {' , '.join(f'{i}->{o}' for i, o in sizes) or 'none'}. "
            "Use nn.Linear(100, 128), nn.Linear(128, 256), nn.Linear(256, 512), nn.Linear(512, 784)."
        )
    z = torch.randn(5, 100)
    _check_leaky_relus(g, z)
    with torch.no_grad():
        out = g(z)
    if tuple(out.shape) != (5, 1, 28, 28):
        raise Mistake(
            f"wrong output shape: for noise (5, 100) G must return images (5, 1, 28, 28), "
            f"yours returns {tuple(out.shape)}. Reshape the 784 outputs with "
            ".view(z.shape[0], 1, 28, 28)."
        )
    with torch.no_grad():
        loud = g(z * 100)  # large inputs push an unsquashed output far beyond 1
    if loud.abs().max() > 1.0 + 1e-6:
        raise Mistake(
            f"output outside [-1, 1] (max |x| = {loud.abs().max():.1f}): the real images are "
            "scaled to [-1, 1], so G must end in nn.Tanh() to draw on the same scale."
        )
    _check_tanh_output(g, z, nn.Linear)
    return ["layer sizes 100-128-256-512-784, LeakyReLU, tanh output, shape (N, 1, 28, 28)"]


def _shape_walk(model: nn.Module, x: torch.Tensor, kind: type) -> tuple[str, bool]:
    """The shapes that ``model``'s ``kind`` layers take and give on ``x``, in the order
    they run, "(4, 1, 28, 28) -> (4, 32, 14, 14) -> ...", ending, where a layer fails,
    with that layer and the shape it could not take; and whether one failed."""
    walk: list[tuple[nn.Module, tuple, tuple | None]] = []

    def register(m: nn.Module) -> list:
        if not isinstance(m, kind):
            return []
        return [m.register_forward_pre_hook(lambda mod, a: walk.append((mod, _shape(a[0]), None))),
                m.register_forward_hook(
                    lambda mod, a, out: walk.__setitem__(-1, (mod, walk[-1][1], _shape(out))))]

    try:
        _run_hooked(model, x, register)
    except Exception:  # noqa: BLE001 - the walk up to the failing layer is the point
        pass
    if not walk:
        return "", False
    shapes = [str(walk[0][1])] + [str(out) for _, _, out in walk if out is not None]
    text = " -> ".join(shapes)
    failed, shape_in, out = walk[-1]
    if out is None:
        text += f", then {failed} fails on {shape_in}"
    return text, out is None


_DCGAN_WALKS = {  # (what the layers are called, the shapes the assignment aims for)
    nn.ConvTranspose2d: (
        "transposed convolutions",
        "(N, 100, 1, 1) -> (N, 128, 4, 4) -> (N, 64, 7, 7) -> (N, 32, 14, 14) -> (N, 1, 28, 28); "
        "a transposed convolution gives (input - 1) x stride - 2 x padding + kernel"),
    nn.Conv2d: (
        "convolutions",
        "(N, 1, 28, 28) -> (N, 32, 14, 14) -> (N, 64, 7, 7) -> (N, 128, 4, 4) -> (N, 1, 1, 1); "
        "a convolution gives floor((input + 2 x padding - kernel) / stride) + 1"),
}


def _walk_advice(walk: str, kind: type) -> str:
    """Advice for a DCGAN whose shapes go astray: the student's ``walk`` (from
    ``_shape_walk``), then the shapes the assignment aims for."""
    layers, aim = _DCGAN_WALKS[kind]
    return f"Your {layers} take {walk}. The aim: {aim}."


def _first_run(model: nn.Module, x: torch.Tensor, kind: type | None = None) -> None:
    """Run ``model`` on ``x`` once, turning the two classic shape slips into advice:
    images reaching a Linear layer unflattened, noise reaching a transposed convolution
    without its 1 x 1 picture axes. With ``kind`` (a DCGAN's convolution type), a
    convolution that cannot take what reaches it (too few channels, a kernel larger than
    the map) gets the walk of shapes through the layers."""
    slips = {  # (PyTorch's words, dimensions of x): the advice
        ("shapes cannot be multiplied", 4):
            "your D passed the images, shape {shape}, to a Linear layer unflattened "
            "(PyTorch: {error}). Flatten them to (N, 784) first: x.view(x.shape[0], -1).",
        ("input to conv_transpose2d", 2):
            "your G passed the noise, shape {shape}, to a ConvTranspose2d as it is "
            "(PyTorch: {error}). View it as a 1 x 1 picture with 100 channels first: "
            "z.view(z.shape[0], -1, 1, 1).",
    }
    try:
        with torch.no_grad():
            model(x)
    except RuntimeError as err:
        for (words, dims), advice in slips.items():
            if words in str(err) and x.dim() == dims:
                raise Mistake(advice.format(shape=tuple(x.shape), error=err)) from err
        walk, failed = _shape_walk(model, x, kind) if kind is not None else ("", False)
        if failed:
            raise Mistake(f"the shapes do not fit (PyTorch: {err}). " + _walk_advice(walk, kind)) from err
        raise


def _check_discriminator(student) -> list[str]:
    d = _build(student)
    try:
        d_logits = _build(student, logits=True) if not isinstance(student, nn.Module) else None
    except TypeError as err:
        if "logits" not in str(err):
            raise
        raise Mistake(
            "your discriminator takes no logits argument (PyTorch: {err}). Keep the exercise's "
            "def __init__(self, logits=False), and leave out the sigmoid when logits is True "
            "(for BCEWithLogitsLoss).".format(err=err)) from err
    sizes = _linear_sizes(d)
    expected = [(784, 512), (512, 256), (256, 1)]
    if sizes != expected:
        raise Mistake(
            f"wrong layer sizes: the seed's discriminator is 784 -> 512 -> 256 -> 1, your "
            f"linear layers are {' , '.join(f'{i}->{o}' for i, o in sizes) or 'none'}."
        )
    x = torch.randn(6, 1, 28, 28) * 5
    _first_run(d, x)
    _check_leaky_relus(d, x)
    with torch.no_grad():
        p = d(x)
    if tuple(p.shape) != (6, 1):
        fix = ("Return the last layer's (N, 1) as it is, without .squeeze() or .view(-1): the "
               "labels, torch.ones_like(...), take D's shape." if p.dim() < 2 else
               "Flatten the images with x.view(x.shape[0], -1) before the first layer.")
        raise Mistake(
            f"wrong output shape: for images (6, 1, 28, 28) D must return one prediction per "
            f"image, (6, 1); yours returns {tuple(p.shape)}. " + fix
        )
    if not ((p > 0) & (p < 1)).all():
        _check_not_softmax(p)
        raise Mistake("outputs outside (0, 1): with nn.BCELoss, D must end in nn.Sigmoid().")
    _check_sigmoid_output(d, x, nn.Linear)
    if d_logits is not None:
        with torch.no_grad():
            d_logits.load_state_dict(d.state_dict(), strict=False)
            raw = d_logits(x * 20)
        if ((raw > 0) & (raw < 1)).all():
            raise Mistake(
                "double sigmoid: with logits=True your D still ends in a sigmoid, and "
                "BCEWithLogitsLoss applies the sigmoid again. Leave nn.Sigmoid() out when "
                "logits=True."
            )
    return ["layer sizes 784-512-256-1, LeakyReLU, one probability per image, no sigmoid with logits=True"]


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


def _check_losses(bce: Callable, generator_loss: Callable, discriminator_loss: Callable) -> list[str]:
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

    criterion = nn.BCELoss()
    d_fake = torch.tensor([[0.3], [0.8], [0.1]])
    d_real = torch.tensor([[0.7], [0.9], [0.4]])
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
    # The same losses with BCEWithLogitsLoss on logits, where a loss that builds its own
    # BCE gives other numbers or, as nn.BCELoss outside [0, 1] does, raises.
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
    return ["bce matches the formula; G against valid labels; D loss is (real + fake) / 2"]


class _SpyOptimizer:
    """Stands in for an optimizer: records the gradients it sees when asked to step."""

    def __init__(self, opt: torch.optim.Optimizer, name: str, log: list):
        self.opt, self.name, self.log = opt, name, log
        self.param_groups = opt.param_groups
        self.state = opt.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.log.append((f"{self.name}.zero_grad", None))
        self.opt.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        grads = [None if p.grad is None else p.grad.clone() for g in self.param_groups for p in g["params"]]
        self.log.append((f"{self.name}.step", grads))
        return self.opt.step()


@contextlib.contextmanager
def _logging_backward(log: list):
    """Log each backward pass as ("backward", None) in ``log``, among the optimizers'
    calls; ``Tensor.backward`` goes through ``torch.autograd.backward``."""
    original = torch.autograd.backward

    def counting_backward(*args, **kwargs):
        log.append(("backward", None))
        return original(*args, **kwargs)

    torch.autograd.backward = counting_backward
    try:
        yield
    finally:
        torch.autograd.backward = original


def _grads(module: nn.Module) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in module.parameters()]


def _close(a: list, b: list, tol: float = 1e-5) -> bool:
    return all(x is not None and torch.allclose(x, y, atol=tol, rtol=1e-4) for x, y in zip(a, b))


def _reference_grads(g: nn.Module, d: nn.Module, criterion, real, z, g_labels=1.0):
    """At the start state, as the seed's step computes them (D's step sees the same
    fakes): G's gradient from G's loss, D's gradient from G's loss (which the seed
    computes and discards), and D's gradient from D's loss."""
    g, d = copy.deepcopy(g), copy.deepcopy(d)
    fake = g(z)
    d_on_fake = d(fake)
    g_loss = criterion(d_on_fake, torch.full_like(d_on_fake, g_labels))
    grads = torch.autograd.grad(g_loss, list(g.parameters()) + list(d.parameters()))
    n_g = len(list(g.parameters()))
    fake = fake.detach()
    d_loss = reference_losses.discriminator_loss(criterion, d(real), d(fake))
    d_grads = torch.autograd.grad(d_loss, list(d.parameters()))
    return list(grads[:n_g]), list(grads[n_g:]), list(d_grads)


def _wrong_d_losses(g: nn.Module, d: nn.Module, criterion, real, z) -> list[tuple[str, list]]:
    """(advice, D's gradient at the start state) for the common wrong D losses: labels
    the wrong way round, the fake or the real half left out (with or without the / 2),
    only one half divided by 2."""
    g, d = copy.deepcopy(g), copy.deepcopy(d)
    with torch.no_grad():
        fake = g(z)

    def grads(loss: torch.Tensor) -> list:
        return list(torch.autograd.grad(loss, list(d.parameters()), retain_graph=True))

    def bce(p: torch.Tensor, label: float) -> torch.Tensor:
        return criterion(p, torch.full_like(p, label))

    real_only, fake_only = bce(d(real), 1.0), bce(d(fake), 0.0)
    return [
        (_D_SWAPPED, grads((bce(d(real), 0.0) + bce(d(fake), 1.0)) / 2)),
        (_D_NO_FAKE, grads(real_only)), (_D_NO_FAKE, grads(real_only / 2)),
        (_D_NO_REAL, grads(fake_only)), (_D_NO_REAL, grads(fake_only / 2)),
        (_D_HALF_HALVED, grads(real_only + fake_only / 2)),
        (_D_HALF_HALVED, grads(real_only / 2 + fake_only)),
    ]


def _check_step_has_gradients(log: list, net: str) -> None:
    """opt_{net}.step() (its first call in ``log``) must find a gradient: a zero_grad
    between backward and step, or a fake batch cut from G's graph, leaves none."""
    calls = [name for name, _ in log]
    at = calls.index(f"opt_{net}.step")
    if any(grad is not None and bool(grad.any()) for grad in log[at][1]):
        return
    before, zero_grad = calls[:at], f"opt_{net}.zero_grad"
    if zero_grad in before:
        since_zero_grad = before[len(before) - before[::-1].index(zero_grad):]
        if "backward" not in since_zero_grad:
            raise Mistake(
                f"opt_{net}.zero_grad() comes after the backward pass, so it wipes the "
                f"gradients and opt_{net}.step() finds none: {net.upper()} never learns. "
                f"Call opt_{net}.zero_grad() before the loss's backward().")
    if net == "g":
        raise Mistake(
            "opt_g.step() finds no gradient in G, so G never learns: G's fake batch was cut "
            "from G's graph (torch.no_grad() or .detach() in G's step). Only D's step "
            "detaches the fakes; G's loss must backpropagate through D into G.")
    raise Mistake("opt_d.step() finds no gradient in D, so D never learns: compute D's loss "
                  "from D's outputs and call its backward() before opt_d.step().")


def _check_generator_noise(g_calls: list[tuple[torch.Tensor, torch.Tensor]], z: torch.Tensor) -> None:
    """G must run on the ``z`` the step is given: the seed's loop draws one noise vector
    per real image before the step, so noise made inside the step is a second draw (and,
    with a fixed batch size, the wrong number of vectors for a short last batch)."""
    if not g_calls:
        raise Mistake("the step never runs the generator: make the fake batch in the step, "
                      "fake = generator(z), from the z it is given.")
    if not any(_same(given, z) for given, _ in g_calls):
        shapes = ", ".join(sorted({str(tuple(given.shape)) for given, _ in g_calls}))
        raise Mistake(
            f"the generator ran on noise of its own (shape {shapes}), not on the z given to "
            f"train_step (shape {tuple(z.shape)}, one vector per real image): use fake = "
            f"generator(z). The training loop draws z for each batch, as the seed's loop does "
            f"before its step.")


def _check_g_step_scores_fakes(log: list, d_inputs: list[tuple[int, torch.Tensor]],
                               g_calls: list[tuple[torch.Tensor, torch.Tensor]],
                               real: torch.Tensor) -> None:
    """Before opt_g.step(), D must have scored G's output; scoring only the real batch
    leaves G's loss without a path into G."""
    g_step_at = [name for name, _ in log].index("opt_g.step")
    scored = [x for at, x in d_inputs if at < g_step_at]
    fakes = [made for _, made in g_calls]
    if scored and not any(_same(x, made) for x in scored for made in fakes) \
            and any(_same(x, real) for x in scored):
        raise Mistake(
            "G's step scores the real batch: G's loss must come from D's verdict on G's own "
            "images, generator_loss(criterion, discriminator(fake)), or no gradient reaches G.")


def _check_train_step(student: Callable) -> list[str]:
    g, d = reference_models.build_models("fc")
    real = torch.rand(16, 1, 28, 28) * 2 - 1
    z = torch.randn(16, 100)
    criterion = nn.BCELoss()
    ref_g, d_from_g_loss, ref_d = _reference_grads(g, d, criterion, real, z)
    fake_label_g, _, _ = _reference_grads(g, d, criterion, real, z, g_labels=0.0)
    # Stale gradients from an imaginary previous step: a missing zero_grad keeps them.
    stale = 0.5
    for p in list(g.parameters()) + list(d.parameters()):
        p.grad = torch.full_like(p, stale)
    log: list = []
    opt_g = _SpyOptimizer(torch.optim.SGD(g.parameters(), lr=0.0), "opt_g", log)
    opt_d = _SpyOptimizer(torch.optim.SGD(d.parameters(), lr=0.0), "opt_d", log)
    # What each network was given (and G made), with its place in the log: the
    # gradients alone cannot say that G ran on noise of its own or that G's step scored
    # the real batch.
    g_calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    d_inputs: list[tuple[int, torch.Tensor]] = []

    def generator_ran(module, inputs, output) -> None:
        log.append(("generator", None))
        g_calls.append((inputs[0].detach().clone(), output.detach().clone()))

    g.register_forward_hook(generator_ran)
    d.register_forward_hook(
        lambda module, inputs, output: d_inputs.append((len(log), inputs[0].detach().clone())))
    try:
        with _logging_backward(log):
            student(g, d, opt_g, opt_d, criterion, real, z)
    except RuntimeError as err:
        if "backward through the graph a second time" in str(err):
            raise Mistake(
                "the fake batch is not detached in D's step: D's loss tried to backpropagate "
                "into G through the graph G's step already used (PyTorch: 'Trying to backward "
                "through the graph a second time'). Use discriminator(fake.detach())."
            ) from err
        if "modified by an inplace operation" in str(err) and "opt_g.step" in [n for n, _ in log]:
            # What retain_graph=True, the usual answer to the error above, leads to.
            raise Mistake(
                "the fake batch is not detached in D's step: D's loss tried to backpropagate "
                "into G, whose weights opt_g.step() had already changed (PyTorch: 'modified "
                "by an inplace operation'). retain_graph=True does not mend that; use "
                "discriminator(fake.detach()) so D's backward pass stops at the images."
            ) from err
        raise
    backward_calls = [name for name, _ in log if name == "backward"]
    steps = [(name, grads) for name, grads in log if name.endswith(".step")]
    names = [name for name, _ in steps]
    if "opt_g.step" not in names or "opt_d.step" not in names:
        missing = "opt_g.step()" if "opt_g.step" not in names else "opt_d.step()"
        raise Mistake(f"{missing} is never called: each network is updated by its own optimizer.")
    if len(backward_calls) < 2:
        raise Mistake(
            "G and D are updated from one backward pass. Train them in turns: G's loss, "
            "backward, opt_g.step(); then D's loss, backward, opt_d.step()."
        )
    if names.index("opt_g.step") > names.index("opt_d.step"):
        d_at_first_step = steps[names.index("opt_d.step")][1]
        if any(_close(d_at_first_step, [x + extra for x in d_from_g_loss]) for extra in (0.0, stale)):
            raise Mistake(
                "the optimizers are swapped: opt_d.step() follows the backward pass of G's "
                "loss, so it moves D along G's gradient, and D's loss then steps G. G's step "
                "ends with opt_g.step(), D's with opt_d.step().")
        raise Mistake("D is updated before G: the seed trains G first, then D, in every step.")
    _check_generator_noise(g_calls, z)
    _check_g_step_scores_fakes(log, d_inputs, g_calls, real)
    for net in ("g", "d"):
        _check_step_has_gradients(log, net)
    g_at_step = dict(steps)["opt_g.step"]
    d_at_step = dict(steps)["opt_d.step"]
    accumulated_g = [r + stale for r in ref_g]
    accumulated_d = [
        [r + extra for r, extra in zip(ref_d, extras)]
        for extras in (
            [stale] * len(ref_d),
            [stale + x for x in d_from_g_loss],
            d_from_g_loss,
        )
    ]
    if _close(g_at_step, accumulated_g) or (
        not _close(d_at_step, ref_d) and any(_close(d_at_step, acc) for acc in accumulated_d)
    ):
        raise Mistake(
            "missing zero_grad: gradients from before were still there when the optimizer "
            "stepped. PyTorch adds new gradients to old ones; call opt_g.zero_grad() "
            "before G's backward and opt_d.zero_grad() before D's."
        )
    if _close(g_at_step, fake_label_g):
        raise Mistake(
            "the generator loss uses the fake label 0. G wants D to call its images real: "
            "score D(G(z)) against torch.ones_like(...)."
        )
    if _close(g_at_step, [-x for x in fake_label_g]):
        raise Mistake(_MINIMAX)
    if not _close(g_at_step, ref_g):
        raise Mistake(
            "G's gradient is not that of BCE(D(G(z)), valid): check G's loss, and that G's "
            "backward pass comes from that loss alone."
        )
    if _close(d_at_step, [2 * r for r in ref_d]):
        raise Mistake("the discriminator loss is real + fake; the seed averages: (real_loss + fake_loss) / 2.")
    if not _close(d_at_step, ref_d, 1e-4):
        for advice, wrong in _wrong_d_losses(g, d, criterion, real, z):
            if _close(d_at_step, wrong, 1e-4):
                raise Mistake(advice)
        raise Mistake(
            "D's gradient is not that of (BCE(D(real), 1) + BCE(D(fake), 0)) / 2 on the same "
            "fake batch G produced in this step."
        )
    g_after = _grads(g)
    if not _close(g_after, g_at_step):
        raise Mistake(
            "the fake batch is not detached in D's step: D's loss sent gradients into G. "
            "Use discriminator(fake.detach()) so D's backward pass stops at the images."
        )
    calls = [name for name, _ in log]
    if "generator" in calls[calls.index("opt_g.step"):]:
        # The check's optimizers have lr 0, so the gradients above cannot tell; in training
        # G has changed by then and draws other images.
        raise Mistake(
            "G runs again after opt_g.step(), so D's step scores a new fake batch from the "
            "updated G. The seed makes the fake batch once, scores it for G's step, and gives "
            "D the same images: discriminator(fake.detach()).")
    _check_step_uses_its_criterion(student, real, z)
    return ["G step then D step, each with its own zero_grad, detach and backward"]


def _check_step_uses_its_criterion(student: Callable, real: torch.Tensor, z: torch.Tensor) -> None:
    """Run the (otherwise right) step once more with a logits D and BCEWithLogitsLoss:
    a step that builds its own nn.BCELoss, or computes BCE by hand, is right only for
    the criterion the first run used."""
    g, d = reference_models.build_models("fc", logits=True)
    criterion = nn.BCEWithLogitsLoss()
    ref_g, _, ref_d = _reference_grads(g, d, criterion, real, z)
    log: list = []
    opt_g = _SpyOptimizer(torch.optim.SGD(g.parameters(), lr=0.0), "opt_g", log)
    opt_d = _SpyOptimizer(torch.optim.SGD(d.parameters(), lr=0.0), "opt_d", log)
    advice = ("use the criterion your train_step is given (through generator_loss and "
              "discriminator_loss), not a BCE of its own: the course switches to "
              "BCEWithLogitsLoss, for a D that gives logits, by passing that criterion.")
    try:
        student(g, d, opt_g, opt_d, criterion, real, z)
    except Exception as err:  # noqa: BLE001 - any failure here is this one mistake
        raise Mistake(f"your step is right with nn.BCELoss but fails with "
                      f"nn.BCEWithLogitsLoss ({type(err).__name__}: {err}): " + advice) from err
    first = {}
    for name, grads in log:
        first.setdefault(name, grads)
    g_at_step, d_at_step = first.get("opt_g.step"), first.get("opt_d.step")
    # A step left out is as wrong as a wrong one (an empty list would compare "close").
    if g_at_step is None or d_at_step is None or not (
            _close(g_at_step, ref_g) and _close(d_at_step, ref_d, 1e-4)):
        raise Mistake("your step is right with nn.BCELoss but gives other gradients with "
                      "nn.BCEWithLogitsLoss and a D without sigmoid: " + advice)


def _batchnorm_after_last(model: nn.Module, x: torch.Tensor, kind: type) -> bool:
    """Whether a BatchNorm runs after the last ``kind`` layer. (In eval mode a fresh
    BatchNorm changes no number, so this is judged on the order the layers run in.)"""
    ran = _execution_order(model, x)
    at = [i for i, m in enumerate(ran) if isinstance(m, kind)]
    return bool(at) and any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in ran[at[-1]:])


class _FunctionLog(torch.overrides.TorchFunctionMode):
    """Records the name of each torch function a forward pass calls, with the shapes
    going in and out: what module hooks miss when a layer is written as F.max_pool2d,
    F.interpolate, F.linear, ``@`` or ``x.mean((2, 3))`` in ``forward``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple, tuple]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        first = args[0] if args else None
        self.calls.append((getattr(func, "__name__", ""), _shape(first), _shape(out)))
        return out


def _shape(value: object) -> tuple:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else ()


_FULLY_CONNECTED = {"linear", "bilinear", "matmul", "mm", "addmm", "bmm", "einsum",
                    "__matmul__", "__rmatmul__"}
_UPSAMPLING = {"interpolate", "upsample", "upsample_nearest", "upsample_bilinear"}
_REDUCTIONS = {"mean", "sum", "amax", "max", "amin", "nanmean", "logsumexp"}


def _functional_layer(model: nn.Module, x: torch.Tensor) -> str | None:
    """What ``model``'s forward does with plain functions that DCGAN leaves out: a fully
    connected product, pooling, fixed upsampling or a global average over the picture
    (advice for the student), or None."""
    log = _FunctionLog()
    with torch.no_grad(), log:
        model(x)
    for name, shape_in, shape_out in log.calls:
        if name in _FULLY_CONNECTED:
            return (f"a fully connected layer ({name} in your forward): DCGAN is "
                    "all-convolutional, every layer a (transposed) convolution.")
        if "pool" in name:
            return (f"pooling ({name} in your forward): DCGAN resizes with strided "
                    "convolutions (stride 2), so the network learns its own resizing.")
        if name in _UPSAMPLING:
            return (f"fixed upsampling ({name} in your forward): DCGAN's generator "
                    "upsamples with learnt transposed convolutions (nn.ConvTranspose2d, "
                    "stride 2).")
        if name in _REDUCTIONS and len(shape_in) == 4 and shape_in[2] * shape_in[3] > 1 \
                and len(shape_out) < 4:
            return (f"a global average or sum over the picture (x.{name}(...) in your "
                    "forward): DCGAN's discriminator ends with one convolution whose "
                    "kernel covers the whole last map (4x4), giving (N, 1, 1, 1).")
    return None


def _layers_without_batchnorm(model: nn.Module, x: torch.Tensor, kind: type) -> list[int]:
    """The ``kind`` layers (numbered from 1 in the order they run) that no BatchNorm
    follows before the next ``kind`` layer; the last one is not listed."""
    ran = _execution_order(model, x)
    at = [i for i, m in enumerate(ran) if isinstance(m, kind)]
    return [k for k, (i, j) in enumerate(zip(at, at[1:]), start=1)
            if not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in ran[i:j])]


def _check_dcgan_generator(student) -> list[str]:
    g = _build(student)
    kinds = {type(m) for m in g.modules()}
    if nn.Linear in kinds:
        raise Mistake("a fully connected layer: DCGAN is all-convolutional; start with a ConvTranspose2d on z viewed as (N, 100, 1, 1).")
    if kinds & {nn.MaxPool2d, nn.AvgPool2d, nn.Upsample}:
        raise Mistake("pooling or fixed upsampling: DCGAN upsamples with learnt transposed convolutions (nn.ConvTranspose2d, stride 2).")
    if nn.ConvTranspose2d not in kinds:
        raise Mistake("no nn.ConvTranspose2d: G must upsample with transposed convolutions.")
    if not any(issubclass(k, nn.BatchNorm2d) for k in kinds):
        raise Mistake("no BatchNorm: DCGAN puts nn.BatchNorm2d after every transposed convolution but the last.")
    z = torch.randn(4, 100)
    g.eval()
    _first_run(g, z, nn.ConvTranspose2d)
    if (problem := _functional_layer(g, z)) is not None:
        raise Mistake(problem)
    if _batchnorm_after_last(g, z, nn.ConvTranspose2d):
        raise Mistake("BatchNorm on the output layer: the DCGAN paper leaves it out of G's "
                      "last layer (and D's first), so that G draws on the images' own scale; "
                      "end with the last transposed convolution, then nn.Tanh().")
    if missing := _layers_without_batchnorm(g, z, nn.ConvTranspose2d):
        raise Mistake(f"no BatchNorm after transposed convolution {missing[0]}: DCGAN puts "
                      "nn.BatchNorm2d after every transposed convolution but the last (before "
                      "the ReLU); it keeps each layer's outputs at a steady scale, which lets "
                      "the deep G learn.")
    # Between two transposed convolutions a ReLU must act, checked on the numbers (so
    # F.relu counts as much as nn.ReLU, before or after a BatchNorm).
    for k, links in enumerate(_links(g, z, nn.ConvTranspose2d), start=1):
        if any(_is_relu(a, b) for a, b in links):
            continue
        leaky = any(_is_leaky_relu(a, b) for a, b in links)
        raise Mistake(
            f"LeakyReLU after transposed convolution {k}: DCGAN's generator uses nn.ReLU "
            "(after the BatchNorm); LeakyReLU belongs to the discriminator." if leaky else
            f"no ReLU after transposed convolution {k}: DCGAN's generator ends every layer "
            "but the last in nn.ReLU (after the BatchNorm)."
        )
    with torch.no_grad():
        out = g(z)
    with torch.no_grad():
        loud = g(z * 100)
    if tuple(out.shape) != (4, 1, 28, 28):
        walk, _ = _shape_walk(g, z, nn.ConvTranspose2d)
        raise Mistake(f"wrong output shape: noise (4, 100) must give (4, 1, 28, 28); yours gives "
                      f"{tuple(out.shape)}. " + _walk_advice(walk, nn.ConvTranspose2d))
    if loud.abs().max() > 1.0 + 1e-6:
        raise Mistake("output outside [-1, 1]: end with nn.Tanh().")
    _check_tanh_output(g, z, nn.ConvTranspose2d)
    return ["transposed convolutions, BatchNorm, ReLU, tanh, (N, 1, 28, 28), no FC or pooling"]


def _check_dcgan_discriminator(student) -> list[str]:
    d = _build(student)
    kinds = {type(m) for m in d.modules()}
    if nn.Linear in kinds:
        raise Mistake("a fully connected layer: DCGAN is all-convolutional; end with a "
                      "Conv2d whose kernel covers the whole last map (4x4), giving (N, 1, 1, 1).")
    if kinds & {nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d}:
        raise Mistake("pooling: DCGAN's discriminator downsamples with strided convolutions "
                      "(nn.Conv2d with stride=2), so it learns its own downsampling.")
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    if sum(1 for m in convs if max(m.stride) >= 2) < 2:
        raise Mistake("no strided convolutions: halve the picture with nn.Conv2d(..., "
                      "stride=2): 28 -> 14 -> 7 -> 4, then one 4x4 convolution to 1 x 1.")
    if not any(issubclass(k, nn.BatchNorm2d) for k in kinds):
        raise Mistake("no BatchNorm: DCGAN puts nn.BatchNorm2d after every convolution but the "
                      "first and the last.")
    d.eval()
    x = torch.rand(4, 1, 28, 28) * 2 - 1  # images in [-1, 1]
    _first_run(d, x, nn.Conv2d)
    if (problem := _functional_layer(d, x)) is not None:
        raise Mistake(problem)
    ran = _execution_order(d, x)
    conv_at = [i for i, m in enumerate(ran) if isinstance(m, nn.Conv2d)]
    if len(conv_at) >= 2 and any(isinstance(m, nn.BatchNorm2d) for m in ran[conv_at[0]:conv_at[1]]):
        raise Mistake("BatchNorm on the first layer: the DCGAN paper leaves it out of D's input "
                      "layer (and G's output layer); put nn.LeakyReLU(0.2) straight after the "
                      "first convolution.")
    if _batchnorm_after_last(d, x, nn.Conv2d):
        raise Mistake("BatchNorm after the last convolution: D's last layer gives each image "
                      "its score, which BatchNorm would shift by the rest of the batch. The "
                      "paper puts it after every convolution but the first and the last; end "
                      "with the 4x4 convolution, then nn.Sigmoid().")
    if missing := [k for k in _layers_without_batchnorm(d, x, nn.Conv2d) if k > 1]:
        raise Mistake(f"no BatchNorm after convolution {missing[0]}: DCGAN puts "
                      "nn.BatchNorm2d after every convolution but the first and the last "
                      "(before the LeakyReLU); it keeps each layer's outputs at a steady "
                      "scale.")
    _check_leaky_relus(d, x, nn.Conv2d, "convolution")
    with torch.no_grad():
        p = d(x)
    if tuple(p.shape) != (4, 1):
        wrong = (f"wrong output shape: images (4, 1, 28, 28) must give one prediction each, "
                 f"(4, 1); yours gives {tuple(p.shape)}. ")
        if p.numel() == 4:
            raise Mistake(wrong + "Reshape with .view(-1, 1).")
        raise Mistake(wrong + _walk_advice(_shape_walk(d, x, nn.Conv2d)[0], nn.Conv2d))
    # A sigmoid keeps even huge scores in [0, 1]: make the last convolution's huge.
    loud = copy.deepcopy(d)
    last = [m for m in _execution_order(loud, x) if isinstance(m, nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(1000.0)
        p_loud = loud(x)
    if not (((p > 0) & (p < 1)).all() and ((p_loud >= 0) & (p_loud <= 1)).all()):
        _check_not_softmax(p)
        raise Mistake("outputs outside (0, 1): with nn.BCELoss, D must end in nn.Sigmoid().")
    _check_sigmoid_output(d, x, nn.Conv2d)
    return ["strided convolutions, BatchNorm (not on the first layer), LeakyReLU(0.2), "
            "one probability per image, no FC or pooling"]


def _their_frame(err: BaseException) -> traceback.FrameSummary | None:
    """The innermost frame of the traceback in the student's code, not in torch's or
    this package's (the line of torch's linear.py that raised says nothing to them);
    None when their code is not on it (the check tripped over what it returned)."""
    frames = traceback.extract_tb(err.__traceback__)
    library = (str(Path(torch.__file__).parent), str(Path(__file__).parent))
    theirs = [f for f in frames if not f.filename.startswith(library)]
    return theirs[-1] if theirs else None


def _crash_advice(err: BaseException) -> str:
    """What a crash usually means in this course's exercises, where PyTorch's own
    message does not say it."""
    if isinstance(err, ValueError) and "target size" in str(err).lower():
        # Labels built as torch.ones(64, 1) fit one batch size only; the checks use others,
        # and so does a training run's last, shorter batch.
        return (" The labels must have the shape of D's output for every batch size: "
                "torch.ones_like(d_out) and torch.zeros_like(d_out), not torch.ones(64, 1).")
    fixed = re.match(r"shape '\[(\d+),.*' is invalid for input of size", str(err))
    if isinstance(err, RuntimeError) and fixed:
        # img.view(64, -1): a batch size written into the code; the checks use others.
        return (f" If {fixed.group(1)} is a batch size written into the code, take it from the "
                f"input instead, x.view(x.size(0), ...), so that every batch size fits.")
    return ""


# --------------------------------------------------------------------- exercises
@dataclass
class Exercise:
    """One exercise: ``check(...)`` the student's code, ``hint()``, ``solution()``."""

    name: str
    title: str
    student_names: tuple[str, ...]
    _check: Callable[..., list[str]]
    _hint: str
    _solution: tuple

    def check(self, *student) -> CheckResult:
        """A notebook's check cell: run the check on the student's objects, print the
        feedback and return the result; when the exercise is not solved yet, raise
        ``NotYet`` after the feedback, so that a runner (nbgrader) counts the cell."""
        __tracebackhide__ = True  # IPython then shows the student's cell, not this frame
        result = self.report(*student)
        if not result.passed:
            raise NotYet(f"{self.name}: not yet, see the feedback above")
        return result

    def report(self, *student) -> CheckResult:
        """Run the check, print the feedback and return the result, passed or not."""
        result = self.result(*student)
        print(result)
        if not result.passed:
            print(f"  (stuck? {self.name}_exercise.hint(), or .solution() to see the reference)")
        return result

    def result(self, *student) -> CheckResult:
        """Run the check on the student's objects and return the result, silently."""
        try:
            # Checks draw their own inputs from a fixed seed and leave the caller's RNG alone.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                passed_notes = self._check(*student)
            result = CheckResult(self.name, True, passed_notes)
        except Mistake as mistake:
            result = CheckResult(self.name, False, [str(mistake)])
        except NotImplementedError:
            result = CheckResult(self.name, False, ["not implemented yet: replace the `raise NotImplementedError` with your code."])
        except Exception as err:  # the student's code crashed: show where, briefly
            where = _their_frame(err)
            result = CheckResult(self.name, False, [
                f"your code raised {type(err).__name__}: {err} (line {where.lineno}: {where.line})"
                f"{_crash_advice(err)}"
                if where else
                f"what your code returned could not be checked ({type(err).__name__}: {err}): "
                f"is it what the exercise asks for? {self.name}_exercise.hint() says."])
        return result

    def hint(self) -> None:
        print(f"Hint ({self.title}): {self._hint}")

    def solution(self) -> None:
        if _SOLUTIONS_CLOSED:
            print(f"Solutions are closed for this assignment: {self.name}_exercise.hint() "
                  "still helps.")
            return
        print(f"Reference solution ({self.title}), from gan_helpers:\n")
        for obj in self._solution:
            print(inspect.getsource(obj))


generator_exercise = Exercise(
    "generator", "the FC generator", ("FCGenerator",), _check_generator,
    "four nn.Linear layers 100->128->256->512->784; nn.LeakyReLU(0.2) after the first "
    "three, nn.Tanh() after the last; in forward, reshape to (N, 1, 28, 28).",
    (reference_models.FCGenerator,),
)
discriminator_exercise = Exercise(
    "discriminator", "the FC discriminator", ("FCDiscriminator",), _check_discriminator,
    "flatten to (N, 784); nn.Linear 784->512->256->1 with nn.LeakyReLU(0.2) between; "
    "nn.Sigmoid() at the end only when logits is False.",
    (reference_models.FCDiscriminator,),
)
losses_exercise = Exercise(
    "losses", "BCE and the two GAN losses", ("bce", "generator_loss", "discriminator_loss"),
    _check_losses,
    "bce = -(t * log(o) + (1 - t) * log(1 - o)).mean(); G's loss is criterion(d_on_fake, "
    "ones); D's is (criterion(d_on_real, ones) + criterion(d_on_fake, zeros)) / 2.",
    (reference_losses.generator_loss, reference_losses.discriminator_loss),
)
train_step_exercise = Exercise(
    "train_step", "the training step", ("train_step",), _check_train_step,
    "opt_g.zero_grad(); fake = generator(z); generator_loss(criterion, "
    "discriminator(fake)); backward; opt_g.step(). Then opt_d.zero_grad(); "
    "discriminator_loss(criterion, ...) on real and on fake.detach(); backward; "
    "opt_d.step(). Use the criterion you are given, not one of your own.",
    (reference_step.train_step,),
)
dcgan_generator_exercise = Exercise(
    "dcgan_generator", "the DCGAN generator", ("DCGANGenerator",), _check_dcgan_generator,
    "view z as (N, 100, 1, 1); ConvTranspose2d to 4x4 (kernel 4, stride 1), then 7x7 "
    "(kernel 3, stride 2, padding 1), 14x14 and 28x28 (kernel 4, stride 2, padding 1); "
    "BatchNorm2d + ReLU after each but the last, Tanh at the end.",
    (reference_models.DCGANGenerator,),
)

dcgan_discriminator_exercise = Exercise(
    "dcgan_discriminator", "the DCGAN discriminator", ("DCGANDiscriminator",),
    _check_dcgan_discriminator,
    "Conv2d(1, 32, 4, 2, 1) to 14x14, then (32 -> 64, kernel 4, stride 2, padding 1) to "
    "7x7 and (64 -> 128, kernel 3, stride 2, padding 1) to 4x4, then Conv2d(128, 1, 4) to "
    "1x1; nn.LeakyReLU(0.2) after each but the last, BatchNorm2d before it in the middle "
    "two; nn.Sigmoid() at the end and .view(-1, 1).",
    (reference_models.DCGANDiscriminator,),
)

EXERCISES = (generator_exercise, discriminator_exercise, losses_exercise, train_step_exercise,
             dcgan_generator_exercise, dcgan_discriminator_exercise)


def check_generator(student: type | nn.Module) -> CheckResult:
    """Check a student's FC generator class (or instance)."""
    return generator_exercise.report(student)


def check_discriminator(student: type | nn.Module) -> CheckResult:
    """Check a student's FC discriminator class (taking ``logits=``) or instance."""
    return discriminator_exercise.report(student)


def check_losses(
    bce: Callable, generator_loss: Callable, discriminator_loss: Callable
) -> CheckResult:
    """Check a student's ``bce(o, t)``, ``generator_loss(criterion, d_on_fake)`` and
    ``discriminator_loss(criterion, d_on_real, d_on_fake)``."""
    return losses_exercise.report(bce, generator_loss, discriminator_loss)


def check_train_step(train_step: Callable) -> CheckResult:
    """Check a student's ``train_step(generator, discriminator, opt_g, opt_d, criterion,
    real, z)``."""
    return train_step_exercise.report(train_step)


def check_dcgan_generator(student: type | nn.Module) -> CheckResult:
    """Check a student's DCGAN generator class (or instance)."""
    return dcgan_generator_exercise.report(student)


def check_dcgan_discriminator(student: type | nn.Module) -> CheckResult:
    """Check a student's DCGAN discriminator class (or instance)."""
    return dcgan_discriminator_exercise.report(student)
