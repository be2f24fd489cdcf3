"""The questions at the end of each course notebook: a number to work out or a prediction
to make, checked with feedback that names the usual wrong answers.

Each question is an ``Exercise`` whose student object is the answer itself, bound to a
name by a literal assignment (``scaled_191 = 0.498``), so the grader reads it as it reads
the assignments' code. Every expected value is computed here, by the package's own code
or by PyTorch, never typed in. ``QUESTIONS`` lists them; ``assignments.ASSIGNMENTS`` says
which notebook asks which.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .exercise import Exercise, Mistake


def _not_left_blank(answer: object, name: str) -> None:
    if answer is Ellipsis:  # the released notebook's `name = ...`
        raise Mistake(f"{name} is still `...`: write your answer in its place.")


def _number(answer: object, name: str) -> float:
    """``answer`` as a float; a Mistake unless it is a plain int or float, finite."""
    _not_left_blank(answer, name)
    if type(answer) not in (int, float):  # exact types: no class that compares equal to anything
        raise Mistake(f"{name} should be a number, such as `{name} = 0.25`, not a "
                      f"{type(answer).__name__}.")
    if not math.isfinite(answer):
        raise Mistake(f"{name} is {answer}: give a finite number.")
    return float(answer)


def _numeric(name: str, expected: Callable[[], float], explain: Callable[[float], str],
             wrong: Callable[[float], list[tuple[float, str]]], rel: float = 0.01,
             abs_: float = 1e-3) -> Callable[[object], list[str]]:
    """A check of a numeric answer against ``expected()``: close within ``rel`` (relative)
    or ``abs_`` passes with ``explain(value)``; an answer close to one of the usual wrong
    values ``wrong(value)`` gets that mistake's message."""
    def check(answer: object) -> list[str]:
        given, value = _number(answer, name), expected()
        if math.isclose(given, value, rel_tol=rel, abs_tol=abs_):
            return [explain(value)]
        for mistaken, message in wrong(value):
            if math.isclose(given, mistaken, rel_tol=rel, abs_tol=abs_):
                raise Mistake(f"{name} = {answer}: {message}")
        raise Mistake(f"{name} = {answer} is not it. Work it out on paper, then check by "
                      f"running it; {name}_exercise.hint() gives the idea.")
    return check


def _choice(name: str, options: dict[str, str], expected: Callable[[], str],
            why: dict[str, str]) -> Callable[[object], list[str]]:
    """A check of a prediction, one of the letters of ``options``; ``why`` explains the
    right letter and each wrong one."""
    def check(answer: object) -> list[str]:
        _not_left_blank(answer, name)
        letters = ", ".join(f'"{k}"' for k in options)
        if type(answer) is not str or answer.strip().lower() not in options:
            raise Mistake(f"{name} should be one of the letters {letters}, as a string: "
                          f'`{name} = "a"`.')
        given, right = answer.strip().lower(), expected()
        if given != right:
            raise Mistake(f'{name} = "{given}" ({options[given]}): {why[given]}')
        return [why[right]]
    return check


def _question(name: str, title: str, check: Callable, hint: str, worked: str) -> Exercise:
    return Exercise(name, title, (name,), check, hint, (worked,))


# ----------------------------------------------------------------- 1. the data and the game

def _scaled(byte: int) -> float:
    from ..data import to_unit_range

    return to_unit_range(torch.tensor([[[byte]]], dtype=torch.uint8)).item()


def _seed_batches(batch_size: int) -> int:
    # The seed's DataLoader keeps the last, smaller batch (drop_last=False).
    return len(torch.utils.data.DataLoader(range(60_000), batch_size=batch_size))


scaled_191_exercise = _question(
    "scaled_191", "a pixel of 191, scaled",
    _numeric("scaled_191", lambda: _scaled(191),
             lambda v: f"ToTensor gives 191 / 255 = {191 / 255:.3f}; Normalize then gives "
                       f"({191 / 255:.3f} - 0.5) / 0.5 = {v:.3f}.",
             lambda v: [(191 / 255, "that is ToTensor's division by 255 only; Normalize([0.5], "
                                    "[0.5]) then subtracts 0.5 and divides by 0.5."),
                        ((191 - 0.5) / 0.5, "Normalize works on ToTensor's output, 191 / 255, "
                                            "not on the byte itself.")]),
    "ToTensor divides by 255; Normalize([0.5], [0.5]) subtracts the mean 0.5 and divides "
    "by the std 0.5.",
    "(191 / 255 - 0.5) / 0.5 = 191 / 127.5 - 1 = 0.498",
)

seed_batches_of_128_exercise = _question(
    "seed_batches_of_128", "the seed's batches per epoch at batch size 128",
    _numeric("seed_batches_of_128", lambda: _seed_batches(128),
             lambda v: f"60,000 = 468 x 128 + 96: 468 full batches and one of 96, {v:.0f} in all.",
             lambda v: [(v - 1, "that drops the last, smaller batch, as the course's in-memory "
                                "batches do; the seed's DataLoader keeps it."),
                        (60_000 / 128, "a number of batches is a whole number: the last one "
                                       "is smaller.")],
             rel=0, abs_=1e-9),
    "60,000 / 128 is not a whole number; what happens to the digits left over?",
    "ceil(60,000 / 128) = 469: 468 batches of 128 and a last one of 96",
)

# ------------------------------------------------------------------------ 2. the architecture

def _last_layer_parameters() -> int:
    from ..models import FCGenerator

    last = [m for m in FCGenerator().modules() if isinstance(m, nn.Linear)][-1]
    return sum(p.numel() for p in last.parameters())


last_layer_parameters_exercise = _question(
    "last_layer_parameters", "the parameters of G's last layer",
    _numeric("last_layer_parameters", _last_layer_parameters,
             lambda v: f"512 x 784 weights + 784 biases = {v:,.0f}.",
             lambda v: [(512 * 784, "you counted the weights; each of the 784 outputs also "
                                    "has a bias."),
                        (512 + 784, "a fully connected layer has a weight for every (input, "
                                    "output) pair: 512 x 784 of them.")],
             rel=0, abs_=0.5),
    "nn.Linear(512, 784) holds a 784 x 512 weight matrix and one bias per output.",
    "512 * 784 + 784 = 402,192, about 69% of G's 582,000-odd parameters",
)

optimal_d_value_exercise = _question(
    "optimal_d_value", "the best D where p_data = 0.3 and p_g = 0.1",
    _numeric("optimal_d_value", lambda: 0.3 / (0.3 + 0.1),
             lambda v: f"D*(x) = p_data / (p_data + p_g) = 0.3 / 0.4 = {v:.2f}.",
             lambda v: [(1 - v, "that is p_g's share; D* is the probability that x is real, "
                                "the real data's share."),
                        (0.3 / 0.1, "D* is a probability, p_data / (p_data + p_g), not the "
                                    "ratio p_data / p_g.")]),
    "D*(x) = p_data(x) / (p_data(x) + p_g(x)).",
    "0.3 / (0.3 + 0.1) = 0.75",
)

# ------------------------------------------------------------------------------- 3. BCE loss

def _d_loss(on_real: float, on_fake: float, real_label: float = 1.0) -> float:
    from ..losses import discriminator_loss

    return discriminator_loss(nn.BCELoss(), torch.tensor([[on_real]]), torch.tensor([[on_fake]]),
                              real_label=real_label).item()


def _smoothed_best_d() -> float:
    d = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)
    loss = nn.functional.binary_cross_entropy(d, torch.full_like(d, 0.9), reduction="none")
    return d[loss.argmin()].item()


d_loss_value_exercise = _question(
    "d_loss_value", "D's loss when D says 0.9 on a real image and 0.2 on a fake",
    _numeric("d_loss_value", lambda: _d_loss(0.9, 0.2),
             lambda v: f"(-log 0.9 - log(1 - 0.2)) / 2 = (0.105 + 0.223) / 2 = {v:.3f}.",
             lambda v: [(2 * v, "the seed halves the sum: (real + fake) / 2."),
                        ((-math.log(0.9) - math.log(0.2)) / 2,
                         "the fake's label is 0, so its term is -log(1 - 0.2), not -log 0.2.")]),
    "BCE with label 1 is -log D(x); with label 0 it is -log(1 - D(G(z))). Then (real + fake) / 2.",
    "(-log 0.9 - log 0.8) / 2 = 0.164",
)

smoothed_best_d_exercise = _question(
    "smoothed_best_d", "the D(x) that a real label of 0.9 rewards most",
    _numeric("smoothed_best_d", _smoothed_best_d,
             lambda v: f"-(0.9 log D + 0.1 log(1 - D)) is smallest where its derivative, "
                       f"-0.9 / D + 0.1 / (1 - D), is 0: at D = {v:.1f}. D is no longer pushed "
                       "to certainty.",
             lambda v: [(1.0, "at D = 1 the term -0.1 log(1 - D) is infinite: with a target of "
                              "0.9, confidence above 0.9 costs loss.")],
             abs_=0.002),
    "Set the derivative of -(0.9 log D + 0.1 log(1 - D)) with respect to D to zero.",
    "-0.9 / D + 0.1 / (1 - D) = 0 gives D = 0.9: BCE is smallest at its target",
)

# ---------------------------------------------------------------------- 4. a GAN in 2-D

def _collapsed_batch_std() -> float:
    from ..toy import MinibatchStd

    features = torch.randn(1, 128).expand(64, 128)  # one point, 64 times
    return MinibatchStd()(features)[0, -1].item()


optimal_d_where_equal_exercise = _question(
    "optimal_d_where_equal", "the best D where G's points are as dense as the real ones",
    _numeric("optimal_d_where_equal", lambda: 1.0 / (1.0 + 1.0),
             lambda v: f"D* = p / (p + p) = {v}: D cannot tell, so it says a coin flip. On "
                       "the surface above that is the colour halfway between the two ends.",
             lambda v: [(1.0, "1 would mean surely real; where fakes are as dense as real "
                              "points, a point is equally likely to be either."),
                        (0.0, "0 would mean surely fake; where fakes are as dense as real "
                              "points, a point is equally likely to be either.")]),
    "D*(x) = p_data(x) / (p_data(x) + p_g(x)), with the two densities equal.",
    "p / (p + p) = 0.5",
)

collapsed_batch_std_exercise = _question(
    "collapsed_batch_std", "the minibatch-std feature of a batch collapsed onto one point",
    _numeric("collapsed_batch_std", _collapsed_batch_std,
             lambda v: f"Every point is the same, so the feature = std across the batch = {v:.0f}; "
                       "a real batch, spread over eight modes, has a clearly positive one, "
                       "which D can use.",
             lambda v: [(1.0, "the feature is a standard deviation across the batch, not a "
                              "count or a probability: identical points have none.")],
             abs_=1e-3),
    "MinibatchStd appends the mean, over features, of the standard deviation across the batch.",
    "a batch of one point repeated has standard deviation 0 in every feature, so 0",
)

# ---------------------------------------------------------------------- 5. training the FC GAN

_DETACH_OPTIONS = {
    "a": "it trains as before",
    "b": "D's loss takes a different value",
    "c": "PyTorch raises an error at D's backward pass",
    "d": "G's weights move in D's step",
}


def _without_detach() -> str:
    """Run the seed's two steps with ``gen_imgs`` unchanged in D's step and report what
    happens, as one of the letters of ``_DETACH_OPTIONS``."""
    from ..models import FCDiscriminator, FCGenerator

    generator, discriminator, bce = FCGenerator(), FCDiscriminator(), nn.BCELoss()
    opt_g = torch.optim.Adam(generator.parameters())
    imgs = torch.rand(4, 1, 28, 28) * 2 - 1
    valid, fake = torch.ones(4, 1), torch.zeros(4, 1)
    opt_g.zero_grad()
    gen_imgs = generator(torch.randn(4, 100))
    bce(discriminator(gen_imgs), valid).backward()
    opt_g.step()
    with_detach = (bce(discriminator(imgs), valid) + bce(discriminator(gen_imgs.detach()), fake)) / 2
    without = (bce(discriminator(imgs), valid) + bce(discriminator(gen_imgs), fake)) / 2
    if not torch.equal(with_detach, without):
        return "b"
    try:
        without.backward()
    except RuntimeError:  # G's part of the graph was freed by G's backward pass
        return "c"
    return "d" if any(p.grad is not None and p.grad.any() for p in generator.parameters()) else "a"


without_detach_exercise = _question(
    "without_detach", "the seed's loop without .detach()",
    _choice("without_detach", _DETACH_OPTIONS, _without_detach, {
        "a": "something does change: run the loop with `gen_imgs` in place of "
             "`gen_imgs.detach()` and read the error.",
        "b": "the value is the same (detach changes the graph, not the numbers); what "
             "changes is where the backward pass goes.",
        "c": "D's backward pass would run on through gen_imgs into G, but G's backward pass "
             "has already freed that part of the graph: PyTorch raises 'Trying to backward "
             "through the graph a second time'. The detach is what lets the seed reuse the "
             "fakes.",
        "d": "that would happen with fakes made afresh for D (the cell with detach=False "
             "above), but the seed reuses the fakes G's step made: run it and read the error.",
    }),
    "In the seed's loop, G's backward pass runs before D's, through the same gen_imgs.",
    '"c": loss.backward() frees the graph it ran through, G\'s part included',
)


def _gradient_ratio(d_on_fake: float) -> float:
    """|d(valid-label loss)/d logit| over |d(minimax loss)/d logit| at D(G(z)) = d_on_fake."""
    from ..losses import generator_loss

    logit = torch.logit(torch.tensor([[d_on_fake]], dtype=torch.float64)).requires_grad_(True)
    (valid,) = torch.autograd.grad(generator_loss(nn.BCELoss(), torch.sigmoid(logit)), logit)
    (minimax,) = torch.autograd.grad(torch.log(1 - torch.sigmoid(logit)).sum(), logit)
    return (valid.abs() / minimax.abs()).item()


gradient_ratio_exercise = _question(
    "gradient_ratio", "the valid-label gradient over the minimax one at D(G(z)) = 0.001",
    _numeric("gradient_ratio", lambda: _gradient_ratio(0.001),
             lambda v: f"With respect to D's logit, -log D gives -(1 - D) and log(1 - D) gives "
                       f"-D: (1 - 0.001) / 0.001 = {v:.0f}. The worse G does, the larger the "
                       "gap.",
             lambda v: [(1 / v, "that is the minimax gradient over the valid-label one: the "
                                "question asks the other way round."),
                        (1 - 0.001, "that is the valid-label gradient alone; the question "
                                    "asks how many times the minimax one it is.")],
             rel=0.002),
    "Through the sigmoid, d(-log D)/d logit = -(1 - D) and d log(1 - D)/d logit = -D.",
    "(1 - 0.001) / 0.001 = 999",
)

# --------------------------------------------------------------------------------- 6. DCGAN

def _size_after(layer: nn.Module, size: int) -> int:
    return layer(torch.zeros(1, 1, size, size)).shape[-1]


transposed_conv_size_exercise = _question(
    "transposed_conv_size",
    "a 32 x 32 input through ConvTranspose2d(kernel 4, stride 2, padding 1)",
    _numeric("transposed_conv_size",
             lambda: _size_after(nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1), 32),
             lambda v: f"(32 - 1) x 2 - 2 x 1 + 4 = {v:.0f}: the layer doubles the picture, "
                       "as each of the paper's G layers does.",
             lambda v: [(66, "you left out the padding: it trims 1 pixel from each side, "
                             "(32 - 1) x 2 - 2 x 1 + 4."),
                        (16, "a transposed convolution with stride 2 grows the picture: "
                             "(in - 1) x stride - 2 x padding + kernel.")],
             rel=0, abs_=0.5),
    "Output = (input - 1) x stride - 2 x padding + kernel.",
    "(32 - 1) * 2 - 2 * 1 + 4 = 64",
)

strided_conv_size_exercise = _question(
    "strided_conv_size", "a 64 x 64 input through Conv2d(kernel 4, stride 2, padding 1)",
    _numeric("strided_conv_size",
             lambda: _size_after(nn.Conv2d(1, 1, 4, stride=2, padding=1), 64),
             lambda v: f"floor((64 + 2 x 1 - 4) / 2) + 1 = {v:.0f}: the layer halves the "
                       "picture, as each of the paper's D layers does.",
             lambda v: [(v - 1, "you left out the + 1: floor((in + 2 x padding - kernel) / "
                                "stride) + 1."),
                        (128, "a convolution with stride 2 shrinks the picture: "
                              "floor((in + 2 x padding - kernel) / stride) + 1.")],
             rel=0, abs_=0.5),
    "Output = floor((input + 2 x padding - kernel) / stride) + 1.",
    "(64 + 2 - 4) // 2 + 1 = 32",
)

QUESTIONS = (scaled_191_exercise, seed_batches_of_128_exercise, last_layer_parameters_exercise,
             optimal_d_value_exercise, d_loss_value_exercise, smoothed_best_d_exercise,
             optimal_d_where_equal_exercise, collapsed_batch_std_exercise,
             without_detach_exercise, gradient_ratio_exercise, transposed_conv_size_exercise,
             strided_conv_size_exercise)
