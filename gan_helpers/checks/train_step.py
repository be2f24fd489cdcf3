"""The check of the training step: what each optimizer updates, in which order, from
which loss, with which batch, and what D's step sees of G."""

from __future__ import annotations

import contextlib
import copy
from typing import Callable

import torch
from torch import nn

from .. import losses as reference_losses
from .. import models as reference_models
from .exercise import Mistake
from .losses import _D_HALF_HALVED, _D_NO_FAKE, _D_NO_REAL, _D_SWAPPED, _MINIMAX
from .probes import _same


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


def _run_spied(student: Callable, g: nn.Module, d: nn.Module, criterion, real: torch.Tensor,
               z: torch.Tensor) -> tuple[list, list, list]:
    """Run the student's step with optimizers (lr 0) and a backward that log what
    happens, in order; returns (the log, G's (input, output) calls, D's (log position,
    input) calls). A step that backpropagates twice through G's graph is a Mistake."""
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
    return log, g_calls, d_inputs


def _check_order(log: list, d_from_g_loss: list, stale: float) -> list:
    """Each optimizer steps, after its own backward pass, G's before D's; returns the
    steps as (name, gradients at the step)."""
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
    return steps


def _check_gradients(g: nn.Module, d: nn.Module, criterion, real: torch.Tensor,
                     z: torch.Tensor, at_step: dict, references: tuple, stale: float) -> None:
    """The gradients each optimizer stepped with are those of the seed's G and D losses,
    with fresh gradients (zero_grad) and none from D's loss in G (detach)."""
    ref_g, ref_d, d_from_g_loss, fake_label_g = references
    g_at_step = at_step["opt_g.step"]
    d_at_step = at_step["opt_d.step"]
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


def _check_train_step(student: Callable) -> list[str]:
    """The training step: the seed's order, each network's own gradients, detach."""
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
    log, g_calls, d_inputs = _run_spied(student, g, d, criterion, real, z)
    steps = _check_order(log, d_from_g_loss, stale)
    _check_generator_noise(g_calls, z)
    _check_g_step_scores_fakes(log, d_inputs, g_calls, real)
    for net in ("g", "d"):
        _check_step_has_gradients(log, net)
    _check_gradients(g, d, criterion, real, z, dict(steps), (ref_g, ref_d, d_from_g_loss,
                     fake_label_g), stale)
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
