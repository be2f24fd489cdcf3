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
                                            "not on the byte itself.")],
             rel=0, abs_=1.5e-3),
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

def _last_layer_parameters(outputs: int) -> int:
    """Parameters of the FC generator's last layer if it drew ``outputs`` pixel values."""
    from ..models import FCGenerator

    last = [m for m in FCGenerator().modules() if isinstance(m, nn.Linear)][-1]
    return sum(p.numel() for p in nn.Linear(last.in_features, outputs).parameters())


last_layer_parameters_exercise = _question(
    "last_layer_parameters", "the parameters of G's last layer for 32 x 32 colour images",
    _numeric("last_layer_parameters", lambda: _last_layer_parameters(3 * 32 * 32),
             lambda v: f"3 x 32 x 32 = 3,072 outputs: 512 x 3,072 weights + 3,072 biases = "
                       f"{v:,.0f}, about four times MNIST's 402,192.",
             lambda v: [(512 * 3072, "you counted the weights; each of the 3,072 outputs also "
                                     "has a bias."),
                        (_last_layer_parameters(784), "that is MNIST's last layer, with 784 "
                                                      "outputs; a colour image of 32 x 32 has "
                                                      "3 x 32 x 32 of them."),
                        (_last_layer_parameters(32 * 32), "that is one channel; a colour "
                                                          "image has three (red, green, blue).")],
             rel=0, abs_=0.5),
    "The last layer becomes nn.Linear(512, 3 * 32 * 32): a weight per (input, output) pair and "
    "a bias per output.",
    "512 * 3072 + 3072 = 1,575,936",
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


def _smoothed_least_loss(target: float = 0.9) -> float:
    """The smallest BCE term of a real image with real label ``target``, over D(x)."""
    d = torch.linspace(0.0001, 0.9999, 9999, dtype=torch.float64)
    loss = nn.functional.binary_cross_entropy(d, torch.full_like(d, target), reduction="none")
    return loss.min().item()


d_loss_value_exercise = _question(
    "d_loss_value", "D's loss when D says 0.9 on a real image and 0.2 on a fake",
    _numeric("d_loss_value", lambda: _d_loss(0.9, 0.2),
             lambda v: f"(-log 0.9 - log(1 - 0.2)) / 2 = (0.105 + 0.223) / 2 = {v:.3f}.",
             lambda v: [(2 * v, "the seed halves the sum: (real + fake) / 2."),
                        ((-math.log(0.9) - math.log(0.2)) / 2,
                         "the fake's label is 0, so its term is -log(1 - 0.2), not -log 0.2."),
                        (v / math.log(10), "that is with base-10 logs; BCE uses the natural "
                                           "log, ln.")]),
    "BCE with label 1 is -log D(x); with label 0 it is -log(1 - D(G(z))). Then (real + fake) / 2.",
    "(-log 0.9 - log 0.8) / 2 = 0.164",
)

smoothed_least_loss_exercise = _question(
    "smoothed_least_loss", "the smallest BCE term of a real image whose label is 0.9",
    _numeric("smoothed_least_loss", _smoothed_least_loss,
             lambda v: f"At D(x) = 0.9: -(0.9 ln 0.9 + 0.1 ln 0.1) = 0.095 + 0.230 = {v:.3f}. "
                       "With a soft label, even the best D keeps some loss.",
             lambda v: [(0.0, "with a label of 0.9 the loss never reaches 0: it is smallest at "
                              "D(x) = 0.9, and there both terms of BCE count."),
                        (-math.log(0.9), "that is the 0.9 ln D term alone, without its "
                                         "0.9 factor; BCE also has 0.1 ln(1 - D)."),
                        (-0.9 * math.log(0.9), "that is the first term only; add "
                                               "-0.1 ln(1 - 0.9)."),
                        (v / math.log(10), "that is with base-10 logs; BCE uses ln.")],
             abs_=1.5e-3),
    "BCE with label 0.9 is -(0.9 ln D + 0.1 ln(1 - D)), smallest at D = 0.9 (above).",
    "-(0.9 ln 0.9 + 0.1 ln 0.1) = 0.325",
)

# ---------------------------------------------------------------------- 4. a GAN in 2-D

def _collapsed_batch_std() -> float:
    from ..toy import MinibatchStd

    features = torch.randn(1, 128).expand(64, 128)  # one point, 64 times
    return MinibatchStd()(features)[0, -1].item()


optimal_d_where_g_denser_exercise = _question(
    "optimal_d_where_g_denser", "the best D where G's points are three times as dense",
    _numeric("optimal_d_where_g_denser", lambda: 1.0 / (1.0 + 3.0),
             lambda v: f"D* = p / (p + 3p) = 1 / 4 = {v}: a point there is a fake three times "
                       "out of four, so D leans towards fake, and G's points drift away.",
             lambda v: [(0.75, "that is the share of fakes; D* is the probability that the "
                               "point is real."),
                        (1 / 3, "D* is p_data / (p_data + p_g), not the ratio p_data / p_g."),
                        (0.5, "0.5 is where the two densities are equal; here G's is three "
                              "times the real one.")]),
    "D*(x) = p_data(x) / (p_data(x) + p_g(x)), with p_g = 3 p_data.",
    "p / (p + 3p) = 0.25",
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
    "d": "D's backward pass also fills G's gradients",
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
        "d": "it would, if G's part of the graph were still there (the detach=False cell "
             "above made its fakes afresh); the seed's D step reuses the fakes G's step made: "
             "run it and read the error.",
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
    "a 7 x 7 input through ConvTranspose2d(kernel 3, stride 2, padding 1)",
    _numeric("transposed_conv_size",
             lambda: _size_after(nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1), 7),
             lambda v: f"(7 - 1) x 2 - 2 x 1 + 3 = {v:.0f}, not 14: stride 2 roughly doubles, "
                       "and the kernel and padding decide the rest (the course's G uses kernel "
                       "4 for 7 -> 14).",
             lambda v: [(14, "stride 2 does not simply double the picture: (in - 1) x stride - "
                             "2 x padding + kernel."),
                        (15, "you left out the padding: it trims 1 pixel from each side, "
                             "(7 - 1) x 2 - 2 x 1 + 3."),
                        (4, "a transposed convolution with stride 2 grows the picture: "
                            "(in - 1) x stride - 2 x padding + kernel.")],
             rel=0, abs_=0.5),
    "Output = (input - 1) x stride - 2 x padding + kernel.",
    "(7 - 1) * 2 - 2 * 1 + 3 = 13",
)

strided_conv_size_exercise = _question(
    "strided_conv_size", "a 28 x 28 input through Conv2d(kernel 4, stride 2, no padding)",
    _numeric("strided_conv_size",
             lambda: _size_after(nn.Conv2d(1, 1, 4, stride=2, padding=0), 28),
             lambda v: f"floor((28 + 2 x 0 - 4) / 2) + 1 = {v:.0f}: without padding the kernel "
                       "cannot sit on the border, so the picture is a little less than halved.",
             lambda v: [(14, "that is with padding 1, as the course's D has; without it: "
                             "floor((in + 2 x padding - kernel) / stride) + 1."),
                        (v - 1, "you left out the + 1: floor((in + 2 x padding - kernel) / "
                                "stride) + 1."),
                        (25, "that is stride 1; with stride 2 the kernel moves 2 pixels at a "
                             "time.")],
             rel=0, abs_=0.5),
    "Output = floor((input + 2 x padding - kernel) / stride) + 1.",
    "floor((28 - 4) / 2) + 1 = 13",
)

QUESTIONS = (scaled_191_exercise, seed_batches_of_128_exercise, last_layer_parameters_exercise,
             optimal_d_value_exercise, d_loss_value_exercise, smoothed_least_loss_exercise,
             optimal_d_where_g_denser_exercise, collapsed_batch_std_exercise,
             without_detach_exercise, gradient_ratio_exercise, transposed_conv_size_exercise,
             strided_conv_size_exercise)
