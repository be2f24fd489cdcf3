"""Every common mistake planted in a faulty implementation gets its own message."""

import contextlib

import numpy as np
import pytest
import torch
from torch import nn

from gan_helpers import checks
from gan_helpers.losses import discriminator_loss as ref_d_loss
from gan_helpers.losses import generator_loss as ref_g_loss
from gan_helpers.models import DCGANDiscriminator, DCGANGenerator, FCDiscriminator, FCGenerator
from gan_helpers.step import train_step as ref_step


def run(check, *args):
    result = check(*args)
    return result.passed, " ".join(result.feedback)


# ---------------------------------------------------------------- generator
class NoTanhGenerator(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(100, 128), nn.LeakyReLU(0.2), nn.Linear(128, 256), nn.LeakyReLU(0.2),
                                 nn.Linear(256, 512), nn.LeakyReLU(0.2), nn.Linear(512, 784))

    def forward(self, z):
        return self.net(z).view(-1, 1, 28, 28)


class FlatGenerator(NoTanhGenerator):
    def forward(self, z):
        return torch.tanh(self.net(z))


class WideGenerator(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(100, 256), nn.LeakyReLU(0.2), nn.Linear(256, 784), nn.Tanh())

    def forward(self, z):
        return self.net(z).view(-1, 1, 28, 28)


def test_generator_checks():
    assert run(checks.check_generator, FCGenerator)[0]
    passed, text = run(checks.check_generator, NoTanhGenerator)
    assert not passed and "outside [-1, 1]" in text and "nn.Tanh()" in text
    passed, text = run(checks.check_generator, FlatGenerator)
    assert not passed and "wrong output shape" in text and "(5, 784)" in text
    passed, text = run(checks.check_generator, WideGenerator)
    assert not passed and "wrong layer sizes" in text and "100->256" in text


class Lambda(nn.Module):
    """A function as a module, to end a network in it."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class SquashedGenerator(NoTanhGenerator):
    """Seed-sized, with ``squash`` at the output instead of tanh."""

    def __init__(self, squash):
        super().__init__()
        self.squash = squash

    def forward(self, z):
        return self.squash(self.net(z)).view(-1, 1, 28, 28)


@pytest.mark.parametrize("squash, message", [
    (torch.sigmoid, "never below 0"),
    (lambda h: (torch.tanh(h) + 1) / 2, "never below 0"),
    (lambda h: torch.tanh(h) / 2, "not tanh"),
    (lambda h: h.clamp(-1, 1), "not tanh"),
    (nn.functional.hardtanh, "not tanh"),
], ids=["sigmoid", "tanh-to-0-1", "half-tanh", "clamp", "hardtanh"])
def test_an_output_within_range_must_still_be_tanh(squash, message):
    # Each stays within [-1, 1], which is all the range check sees.
    passed, text = run(checks.check_generator, lambda: SquashedGenerator(squash))
    assert not passed and message in text and "nn.Tanh()" in text
    dcgan_g = nn.Sequential(nn.Unflatten(1, (100, 1, 1)), nn.ConvTranspose2d(100, 8, 7),
                            nn.BatchNorm2d(8), nn.ReLU(), nn.ConvTranspose2d(8, 1, 4, 4))
    passed, text = run(checks.check_dcgan_generator, lambda: nn.Sequential(dcgan_g, Lambda(squash)))
    assert not passed and message in text and "nn.Tanh()" in text


def fc_generator(*activations):
    """A seed-sized FC generator with the given module (or None) after each hidden layer."""
    sizes, layers = [100, 128, 256, 512], []
    for (i, o), act in zip(zip(sizes, sizes[1:]), activations):
        layers += [nn.Linear(i, o)] + ([act] if act is not None else [])
    layers += [nn.Linear(512, 784), nn.Tanh(), nn.Unflatten(1, (1, 28, 28))]
    return nn.Sequential(*layers)


class FunctionalGenerator(nn.Module):
    """Right, written with F.leaky_relu instead of nn.LeakyReLU modules; optionally with
    BatchNorm before each activation, and F.relu instead (``slope`` None)."""

    def __init__(self, batchnorm=False, slope=0.2):
        super().__init__()
        self.l1, self.l2 = nn.Linear(100, 128), nn.Linear(128, 256)
        self.l3, self.l4 = nn.Linear(256, 512), nn.Linear(512, 784)
        self.norms = nn.ModuleList(nn.BatchNorm1d(n) if batchnorm else nn.Identity()
                                   for n in (128, 256, 512))
        self.slope = slope

    def act(self, h):
        return nn.functional.relu(h) if self.slope is None else nn.functional.leaky_relu(h, self.slope)

    def forward(self, z):
        h = self.act(self.norms[0](self.l1(z)))
        h = self.act(self.norms[1](self.l2(h)))
        h = self.act(self.norms[2](self.l3(h)))
        return torch.tanh(self.l4(h)).view(-1, 1, 28, 28)


def test_the_activations_are_checked_on_the_numbers():
    leaky = nn.LeakyReLU(0.2)
    assert run(checks.check_generator, FunctionalGenerator)[0]
    assert run(checks.check_generator, fc_generator(leaky, leaky, leaky))[0]
    assert run(checks.check_generator, FCGenerator(batchnorm=True))[0]  # BatchNorm too: allowed
    passed, text = run(checks.check_generator, fc_generator(leaky, nn.ReLU(), leaky))
    assert not passed and "ReLU after hidden layer 2" in text
    passed, text = run(checks.check_generator, fc_generator(nn.LeakyReLU(), leaky, leaky))
    assert not passed and "slope 0.01 after hidden layer 1" in text
    passed, text = run(checks.check_generator, fc_generator(leaky, leaky, None))
    assert not passed and "no activation after hidden layer 3" in text
    # BatchNorm before or after the activation, which is a module or a function.
    assert run(checks.check_generator, FunctionalGenerator(batchnorm=True))[0]
    bn_then = [nn.Sequential(nn.BatchNorm1d(n), nn.LeakyReLU(0.2)) for n in (128, 256, 512)]
    assert run(checks.check_generator, fc_generator(*bn_then))[0]
    then_bn = [nn.Sequential(nn.LeakyReLU(0.2), nn.BatchNorm1d(n)) for n in (128, 256, 512)]
    assert run(checks.check_generator, fc_generator(*then_bn))[0]
    passed, text = run(checks.check_generator, FunctionalGenerator(batchnorm=True, slope=None))
    assert not passed and "ReLU after hidden layer 1" in text
    bn_only = fc_generator(leaky, nn.BatchNorm1d(256), leaky)
    passed, text = run(checks.check_generator, bn_only)
    assert not passed and "no LeakyReLU after hidden layer 2" in text
    relu_d = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256),
                           nn.LeakyReLU(0.2), nn.Linear(256, 1), nn.Sigmoid())
    passed, text = run(checks.check_discriminator, relu_d)
    assert not passed and "ReLU after hidden layer 1" in text


# ------------------------------------------------------------ discriminator
class AlwaysSigmoidD(FCDiscriminator):
    def __init__(self, logits=False):
        super().__init__(logits=False)  # ignores logits=True: a double sigmoid with BCEWithLogitsLoss


class SmallD(nn.Module):
    def __init__(self, logits=False):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(784, 256), nn.LeakyReLU(0.2), nn.Linear(256, 1), nn.Sigmoid())

    def forward(self, x):
        return self.net(x.view(x.shape[0], -1))


class SquashedD(SmallD):
    """Seed-sized, ending in ``squash`` instead of one sigmoid."""

    def __init__(self, squash, logits=False):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(784, 512), nn.LeakyReLU(0.2), nn.Linear(512, 256),
                                 nn.LeakyReLU(0.2), nn.Linear(256, 1), *([] if logits else [Lambda(squash)]))


@pytest.mark.parametrize("squash, message", [
    (lambda h: torch.softmax(h, dim=1), "exactly 1"),
    (lambda h: torch.sigmoid(torch.sigmoid(h)), "not the sigmoid"),
    (nn.functional.hardsigmoid, "not the sigmoid"),
], ids=["softmax", "two-sigmoids", "hardsigmoid"])
def test_an_output_within_0_1_must_still_be_the_sigmoid(squash, message):
    passed, text = run(checks.check_discriminator, lambda logits=False: SquashedD(squash, logits))
    assert not passed and message in text and "nn.Sigmoid()" in text
    dcgan_d_net = dcgan_d(sigmoid=False)
    passed, text = run(checks.check_dcgan_discriminator,
                       lambda: nn.Sequential(dcgan_d_net(), Lambda(squash)))
    assert not passed and message in text and "nn.Sigmoid()" in text


def test_dropout_is_allowed():
    # Not the seed's, but no mistake: the checks compare numbers from one run only, as
    # each run draws new dropout masks.
    d = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.LeakyReLU(0.2), nn.Dropout(0.3),
                      nn.Linear(512, 256), nn.LeakyReLU(0.2), nn.Dropout(0.3), nn.Linear(256, 1), nn.Sigmoid())
    assert run(checks.check_discriminator, d)[0]
    g = fc_generator(*[nn.Sequential(nn.LeakyReLU(0.2), nn.Dropout(0.3)) for _ in range(3)])
    assert run(checks.check_generator, g)[0]


def test_discriminator_checks():
    assert run(checks.check_discriminator, FCDiscriminator)[0]
    passed, text = run(checks.check_discriminator, AlwaysSigmoidD)
    assert not passed and "double sigmoid" in text
    passed, text = run(checks.check_discriminator, SmallD)
    assert not passed and "wrong layer sizes" in text


class SqueezedD(FCDiscriminator):
    def forward(self, x):
        return super().forward(x).squeeze(1)


class UnflattenedChannelD(FCDiscriminator):
    def forward(self, x):
        return self.net(x.view(x.shape[0], 1, 784))  # (N, 1, 1): one axis too many


class NoLogitsArgumentD(FCDiscriminator):
    def __init__(self):
        super().__init__()


class FixedBatchD(FCDiscriminator):
    def forward(self, x):
        return self.net(x.view(64, 784))  # the batch size written into the code


class FixedBatchG(FCGenerator):
    def forward(self, z):
        return self.net(z).view(64, 1, 28, 28)


@pytest.mark.parametrize("check,student", [(checks.check_discriminator, FixedBatchD),
                                           (checks.check_generator, FixedBatchG)])
def test_a_batch_size_written_into_a_view_is_named(check, student):
    passed, text = run(check, student)
    assert not passed and "If 64 is a batch size written into the code" in text, text


def test_discriminator_shape_and_signature_slips_get_their_own_fix():
    passed, text = run(checks.check_discriminator, SqueezedD)
    assert not passed and "yours returns (6,)" in text and "without .squeeze()" in text, text
    passed, text = run(checks.check_discriminator, UnflattenedChannelD)
    assert not passed and "yours returns (6, 1, 1)" in text and "x.view(x.shape[0], -1)" in text, text
    passed, text = run(checks.check_discriminator, NoLogitsArgumentD)
    assert not passed and "takes no logits argument" in text and "logits=False" in text, text


# ------------------------------------------------------------------- losses
def bce(o, t):
    return -(t * torch.log(o) + (1 - t) * torch.log(1 - o)).mean()


def test_losses_correct():
    assert run(checks.check_losses, bce, ref_g_loss, ref_d_loss)[0]


def test_generator_loss_with_fake_labels():
    def g_loss(criterion, d_on_fake):
        return criterion(d_on_fake, torch.zeros_like(d_on_fake))

    passed, text = run(checks.check_losses, bce, g_loss, ref_d_loss)
    assert not passed and "uses the fake label 0" in text


def test_discriminator_loss_not_averaged():
    def d_loss(criterion, real, fake):
        return criterion(real, torch.ones_like(real)) + criterion(fake, torch.zeros_like(fake))

    passed, text = run(checks.check_losses, bce, ref_g_loss, d_loss)
    assert not passed and "(real_loss + fake_loss) / 2" in text


@pytest.mark.parametrize("d_loss,message", [
    (lambda c, r, f: (c(r, torch.zeros_like(r)) + c(f, torch.ones_like(f))) / 2,
     "D's labels are the wrong way round"),
    (lambda c, r, f: c(r, torch.ones_like(r)), "leaves out the fake batch"),
    (lambda c, r, f: c(r, torch.ones_like(r)) / 2, "leaves out the fake batch"),
    (lambda c, r, f: c(f, torch.zeros_like(f)), "leaves out the real batch"),
    (lambda c, r, f: c(r, torch.ones_like(r)) + c(f, torch.zeros_like(f)) / 2,
     "only one half of D's loss is divided by 2"),
    (lambda c, r, f: c(r, torch.ones_like(r)) / 2 + c(f, torch.zeros_like(f)),
     "only one half of D's loss is divided by 2"),
], ids=["swapped", "real-only", "real-only-halved", "fake-only", "fake-halved", "real-halved"])
def test_discriminator_loss_labels_and_halves(d_loss, message):
    passed, text = run(checks.check_losses, bce, ref_g_loss, d_loss)
    assert not passed and message in text, text


def test_double_sigmoid_in_loss():
    def g_loss(criterion, d_on_fake):
        return criterion(torch.sigmoid(d_on_fake), torch.ones_like(d_on_fake))

    passed, text = run(checks.check_losses, bce, g_loss, ref_d_loss)
    assert not passed and "generator_loss applies a sigmoid to D's output" in text

    def d_loss(criterion, real, fake):
        return ref_d_loss(criterion, torch.sigmoid(real), torch.sigmoid(fake))

    passed, text = run(checks.check_losses, bce, ref_g_loss, d_loss)
    assert not passed and "discriminator_loss applies a sigmoid to D's output" in text


def test_generator_loss_minimax():
    def g_loss(criterion, d_on_fake):
        return -criterion(d_on_fake, torch.zeros_like(d_on_fake))

    passed, text = run(checks.check_losses, bce, g_loss, ref_d_loss)
    assert not passed and "minimax" in text and "torch.ones_like" in text


@pytest.mark.parametrize("slip, message", [
    (lambda loss: loss.item(), "returns a float, not a tensor"),
    (lambda loss: None, "returns None"),
    (lambda loss: loss.expand(3), "returns 3 numbers"),
], ids=["item", "no-return", "not-reduced"])
def test_each_loss_must_return_one_tensor(slip, message):
    def g_loss(criterion, d_on_fake):
        return slip(ref_g_loss(criterion, d_on_fake))

    def d_loss(criterion, real, fake):
        return slip(ref_d_loss(criterion, real, fake))

    for losses, name in [((lambda o, t: slip(bce(o, t)), ref_g_loss, ref_d_loss), "bce"),
                         ((bce, g_loss, ref_d_loss), "generator_loss"),
                         ((bce, ref_g_loss, d_loss), "discriminator_loss")]:
        passed, text = run(checks.check_losses, *losses)
        assert not passed and f"{name} {message}" in text, text


def test_bce_sum_and_sign():
    passed, text = run(checks.check_losses, lambda o, t: -(t * torch.log(o) + (1 - t) * torch.log(1 - o)).sum(),
                       ref_g_loss, ref_d_loss)
    assert not passed and "sums over the batch" in text
    passed, text = run(checks.check_losses, lambda o, t: (t * torch.log(o) + (1 - t) * torch.log(1 - o)).mean(),
                       ref_g_loss, ref_d_loss)
    assert not passed and "wrong sign" in text


@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_bce_with_the_minus_sign_on_one_term(reduce):
    def first_term_negated(o, t):
        return getattr(-t * torch.log(o) + (1 - t) * torch.log(1 - o), reduce)()

    passed, text = run(checks.check_losses, first_term_negated, ref_g_loss, ref_d_loss)
    assert not passed and "negates only its first term" in text, text


@pytest.mark.parametrize("library_bce", [
    lambda o, t: nn.BCELoss()(o, t),
    lambda o, t: nn.functional.binary_cross_entropy(o, t),
], ids=["BCELoss", "functional"])
def test_bce_must_be_written_by_hand(library_bce):
    passed, text = run(checks.check_losses, library_bce, ref_g_loss, ref_d_loss)
    assert not passed and "formula by hand" in text, text


@pytest.mark.parametrize("own_criterion", [nn.BCELoss(), bce], ids=["BCELoss", "hand-written"])
def test_each_loss_must_use_the_criterion_it_is_given(own_criterion):
    def g_loss(criterion, d_on_fake):
        return ref_g_loss(own_criterion, d_on_fake)

    def d_loss(criterion, real, fake):
        return ref_d_loss(own_criterion, real, fake)

    passed, text = run(checks.check_losses, bce, g_loss, ref_d_loss)
    assert not passed and "generator_loss must work with any criterion" in text, text
    passed, text = run(checks.check_losses, bce, ref_g_loss, d_loss)
    assert not passed and "discriminator_loss must work with any criterion" in text, text


def numpy_bce(o, t):
    o, t = o.detach().numpy(), t.numpy()
    return torch.tensor(-(t * np.log(o) + (1 - t) * np.log(1 - o)).mean())


@pytest.mark.parametrize("losses,name", [
    ((numpy_bce, ref_g_loss, ref_d_loss), "bce"),
    ((bce, lambda criterion, d: ref_g_loss(criterion, d.detach()), ref_d_loss), "generator_loss"),
    ((bce, ref_g_loss, lambda *args: torch.tensor(ref_d_loss(*args).item())), "discriminator_loss"),
], ids=["bce in NumPy", "G's loss on detached scores", "D's loss rebuilt from .item()"])
def test_a_loss_off_the_graph_is_named(losses, name):
    passed, text = run(checks.check_losses, *losses)
    assert not passed and f"{name} gives the right number but no gradient" in text, text


def test_bce_with_a_constant_in_place_of_o_is_named():
    def frozen(o, t):  # the right value, but o's gradient is lost through .detach()
        o_value = o.detach()
        return -(t * torch.log(o_value) + (1 - t) * torch.log(1 - o_value)).mean() + 0 * o.sum()

    passed, text = run(checks.check_losses, frozen, ref_g_loss, ref_d_loss)
    assert not passed and "not BCE's gradient with respect to o" in text, text


def test_labels_of_one_batch_size_are_named():
    def d_loss(criterion, real, fake):
        return (criterion(real, torch.ones(64, 1)) + criterion(fake, torch.zeros(64, 1))) / 2

    passed, text = run(checks.check_losses, bce, ref_g_loss, d_loss)
    assert not passed and "raised ValueError" in text, text
    assert "torch.ones_like(d_out) and torch.zeros_like(d_out), not torch.ones(64, 1)" in text, text


# --------------------------------------------------------------- train step
def seed_step(G, D, opt_g, opt_d, criterion, real, z, *, detach=True, zero_g=True, zero_d=True,
              g_label=1.0, average=True, zero_late="", fake_without_graph=False,
              retain_graph=False, minimax=False, swap_d_labels=False, d_halves="both",
              regenerate=False, own_noise=None, g_scores_real=False):
    """The seed's step, with one planted mistake at most; ``zero_late`` "g" or "d" calls
    that network's zero_grad between its backward and its step; ``d_halves`` "real" or
    "fake" (with "/2" for the average kept) leaves the other half out of D's loss;
    "real+fake/2" or "real/2+fake" divides one half alone; ``regenerate`` gives D a new
    G(z) after G's step instead of the batch G was scored on; ``own_noise`` a batch size
    draws that many noise vectors in the step instead of using ``z``; ``g_scores_real``
    scores the real batch in G's step."""
    if own_noise is not None:
        z = torch.randn(own_noise, z.shape[1])
    if zero_g and zero_late != "g":
        opt_g.zero_grad()
    with torch.no_grad() if fake_without_graph else contextlib.nullcontext():
        fake = G(z)
    d_fake = D(real if g_scores_real else fake)
    if minimax:
        g_loss = -criterion(d_fake, torch.zeros_like(d_fake))
    else:
        g_loss = criterion(d_fake, torch.full_like(d_fake, g_label))
    g_loss.backward(retain_graph=retain_graph)
    if zero_late == "g":
        opt_g.zero_grad()
    opt_g.step()
    if zero_d and zero_late != "d":
        opt_d.zero_grad()
    if regenerate:
        fake = G(z)
    d_real, d_fake = D(real), D(fake.detach() if detach else fake)
    real_target, fake_target = torch.ones_like(d_real), torch.zeros_like(d_fake)
    if swap_d_labels:
        real_target, fake_target = fake_target, real_target
    real_loss = criterion(d_real, real_target)
    fake_loss = criterion(d_fake, fake_target)
    d_loss = (real_loss + fake_loss) / 2 if average else real_loss + fake_loss
    if d_halves == "real+fake/2":
        d_loss = real_loss + fake_loss / 2
    elif d_halves == "real/2+fake":
        d_loss = real_loss / 2 + fake_loss
    elif d_halves != "both":
        d_loss = real_loss if d_halves.startswith("real") else fake_loss
        d_loss = d_loss / 2 if d_halves.endswith("/2") else d_loss
    d_loss.backward()
    if zero_late == "d":
        opt_d.zero_grad()
    opt_d.step()


def one_backward_step(G, D, opt_g, opt_d, criterion, real, z):
    opt_g.zero_grad(), opt_d.zero_grad()
    fake = G(z)
    g_loss = criterion(D(fake), torch.ones(len(z), 1))
    d_loss = (criterion(D(real), torch.ones(len(z), 1)) + criterion(D(fake.detach()), torch.zeros(len(z), 1))) / 2
    (g_loss + d_loss).backward()
    opt_g.step(), opt_d.step()


def d_first_step(G, D, opt_g, opt_d, criterion, real, z):
    opt_d.zero_grad()
    fake = G(z)
    ((criterion(D(real), torch.ones(len(z), 1)) + criterion(D(fake.detach()), torch.zeros(len(z), 1))) / 2).backward()
    opt_d.step()
    opt_g.zero_grad()
    criterion(D(fake), torch.ones(len(z), 1)).backward()
    opt_g.step()


def swapped_optimizers(G, D, opt_g, opt_d, criterion, real, z):
    opt_g.zero_grad()
    fake = G(z)
    criterion(D(fake), torch.ones(len(z), 1)).backward()
    opt_d.step()
    opt_d.zero_grad()
    ((criterion(D(real), torch.ones(len(z), 1)) + criterion(D(fake.detach()), torch.zeros(len(z), 1))) / 2).backward()
    opt_g.step()


def own_bce_step(G, D, opt_g, opt_d, criterion, real, z):
    criterion = nn.BCELoss()  # ignores the criterion it is given
    seed_step(G, D, opt_g, opt_d, criterion, real, z)


def hand_written_bce_step(G, D, opt_g, opt_d, criterion, real, z):
    seed_step(G, D, opt_g, opt_d, lambda o, t: -(t * torch.log(o) + (1 - t) * torch.log(1 - o)).mean(),
              real, z)


def skips_with_logits_step(G, D, opt_g, opt_d, criterion, real, z):
    if isinstance(criterion, nn.BCEWithLogitsLoss):
        return  # trains only for the criterion it was written for
    seed_step(G, D, opt_g, opt_d, criterion, real, z)


def only_g_optimizer(G, D, opt_g, opt_d, criterion, real, z):
    opt_g.zero_grad()
    fake = G(z)
    criterion(D(fake), torch.ones(len(z), 1)).backward()
    opt_g.step()
    opt_g.zero_grad()
    ((criterion(D(real), torch.ones(len(z), 1)) + criterion(D(fake.detach()), torch.zeros(len(z), 1))) / 2).backward()
    opt_g.step()


@pytest.mark.parametrize("step", [ref_step, seed_step], ids=["package", "seed"])
def test_correct_train_steps_pass(step):
    passed, text = run(checks.check_train_step, step)
    assert passed, text


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"detach": False}, "not detached"),
        ({"zero_g": False}, "missing zero_grad"),
        ({"zero_d": False}, "missing zero_grad"),
        ({"g_label": 0.0}, "uses the fake label 0"),
        ({"average": False}, "(real_loss + fake_loss) / 2"),
        ({"zero_late": "g"}, "opt_g.zero_grad() comes after the backward pass"),
        ({"zero_late": "d"}, "opt_d.zero_grad() comes after the backward pass"),
        ({"fake_without_graph": True}, "cut from G's graph"),
        ({"detach": False, "retain_graph": True}, "retain_graph=True does not mend that"),
        ({"minimax": True}, "minimax"),
        ({"swap_d_labels": True}, "D's labels are the wrong way round"),
        ({"d_halves": "real"}, "D's loss leaves out the fake batch"),
        ({"d_halves": "real/2"}, "D's loss leaves out the fake batch"),
        ({"d_halves": "fake"}, "D's loss leaves out the real batch"),
        ({"d_halves": "fake/2"}, "D's loss leaves out the real batch"),
        ({"d_halves": "real+fake/2"}, "only one half of D's loss is divided by 2"),
        ({"d_halves": "real/2+fake"}, "only one half of D's loss is divided by 2"),
        ({"regenerate": True}, "G runs again after opt_g.step()"),
        ({"own_noise": 64}, "noise of its own (shape (64, 100)), not on the z given"),
        ({"own_noise": 16}, "noise of its own (shape (16, 100)), not on the z given"),
        ({"g_scores_real": True}, "G's step scores the real batch"),
    ],
)
def test_train_step_mistakes(kwargs, message):
    passed, text = run(checks.check_train_step, lambda *a: seed_step(*a, **kwargs))
    assert not passed and message in text, text


@pytest.mark.parametrize(
    "step,message",
    [
        (one_backward_step, "one backward pass"),
        (d_first_step, "G first, then D"),
        (swapped_optimizers, "the optimizers are swapped"),
        (own_bce_step, "right with nn.BCELoss but fails with nn.BCEWithLogitsLoss"),
        (hand_written_bce_step, "right with nn.BCELoss but gives other gradients with nn.BCEWithLogitsLoss"),
        (skips_with_logits_step, "right with nn.BCELoss but gives other gradients with nn.BCEWithLogitsLoss"),
        (only_g_optimizer, "opt_d.step() is never called"),
    ],
)
def test_train_step_structure_mistakes(step, message):
    passed, text = run(checks.check_train_step, step)
    assert not passed and message in text, text


# -------------------------------------------------------------------- DCGAN
class FCInDCGAN(DCGANGenerator):
    def __init__(self):
        super().__init__(width=8)
        self.project = nn.Linear(100, 100)


class PoolingDCGAN(DCGANGenerator):
    def __init__(self):
        super().__init__(width=8)
        self.pool = nn.MaxPool2d(2)


def test_dcgan_checks():
    assert run(checks.check_dcgan_generator, lambda: DCGANGenerator(width=8))[0]
    assert "fully connected" in run(checks.check_dcgan_generator, FCInDCGAN)[1]
    assert "pooling" in run(checks.check_dcgan_generator, PoolingDCGAN)[1]
    assert "outside [-1, 1]" in run(checks.check_dcgan_generator, lambda: nn.Sequential(
        nn.Unflatten(1, (100, 1, 1)), nn.ConvTranspose2d(100, 8, 7), nn.BatchNorm2d(8), nn.ReLU(),
        nn.ConvTranspose2d(8, 1, 4, 4)))[1]


def test_dcgan_generator_without_batchnorm_on_its_output():
    # In eval mode a fresh BatchNorm is the identity, so only the order of layers shows it.
    passed, text = run(checks.check_dcgan_generator, lambda: nn.Sequential(
        nn.Unflatten(1, (100, 1, 1)), nn.ConvTranspose2d(100, 8, 7), nn.BatchNorm2d(8), nn.ReLU(),
        nn.ConvTranspose2d(8, 1, 4, 4), nn.BatchNorm2d(1), nn.Tanh()))
    assert not passed and "BatchNorm on the output layer" in text


def dcgan(act_inside, out_act=None):
    """A small DCGAN generator (100 -> 8 x 7 x 7 -> 1 x 28 x 28) with ``act_inside``
    after its BatchNorm; ``act_inside`` None leaves the activation out."""
    inside = [act_inside] if act_inside is not None else []
    return nn.Sequential(nn.Unflatten(1, (100, 1, 1)), nn.ConvTranspose2d(100, 8, 7),
                         nn.BatchNorm2d(8), *inside, nn.ConvTranspose2d(8, 1, 4, 4), nn.Tanh())


class FunctionalReluDCGAN(nn.Module):
    def __init__(self):
        super().__init__()
        self.up1, self.bn = nn.ConvTranspose2d(100, 8, 7), nn.BatchNorm2d(8)
        self.up2 = nn.ConvTranspose2d(8, 1, 4, 4)

    def forward(self, z):
        h = nn.functional.relu(self.bn(self.up1(z.view(-1, 100, 1, 1))))
        return torch.tanh(self.up2(h))


def test_dcgan_activations_are_checked_on_the_numbers():
    assert run(checks.check_dcgan_generator, lambda: dcgan(nn.ReLU()))[0]
    assert run(checks.check_dcgan_generator, FunctionalReluDCGAN)[0]
    passed, text = run(checks.check_dcgan_generator, lambda: dcgan(nn.LeakyReLU(0.2)))
    assert not passed and "LeakyReLU after transposed convolution 1" in text
    passed, text = run(checks.check_dcgan_generator, lambda: dcgan(None))
    assert not passed and "no ReLU after transposed convolution 1" in text
    # ReLU before the BatchNorm, in a network whose BatchNorm has learnt statistics
    relu_then_bn = nn.Sequential(nn.Unflatten(1, (100, 1, 1)), nn.ConvTranspose2d(100, 8, 7),
                                 nn.ReLU(), nn.BatchNorm2d(8), nn.ConvTranspose2d(8, 1, 4, 4), nn.Tanh())
    relu_then_bn(torch.randn(64, 100))  # train mode: the running statistics move
    assert run(checks.check_dcgan_generator, relu_then_bn)[0]


def dcgan_d(first_bn=False, act=lambda: nn.LeakyReLU(0.2, inplace=True), later_act=None,
            ending="conv", sigmoid=True, flat=True, last_bn=False):
    """A DCGAN discriminator, 28 -> 14 -> 7 -> 4 -> 1, with one planted mistake at most."""
    later = later_act or act

    class D(nn.Module):
        def __init__(self):
            super().__init__()
            layers = [nn.Conv2d(1, 8, 4, 2, 1)] + ([nn.BatchNorm2d(8)] if first_bn else []) + [
                act(), nn.Conv2d(8, 16, 4, 2, 1), nn.BatchNorm2d(16), later(),
                nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), later()]
            layers += {"conv": [nn.Conv2d(32, 1, 4)],
                       "pool": [nn.AdaptiveAvgPool2d(1), nn.Conv2d(32, 1, 1)],
                       "fc": [nn.Flatten(), nn.Linear(512, 1)]}[ending]
            layers += [nn.BatchNorm2d(1)] if last_bn else []
            self.net = nn.Sequential(*layers, *([nn.Sigmoid()] if sigmoid else []))

        def forward(self, x):
            out = self.net(x)
            return out.view(-1, 1) if flat else out

    return D


class FunctionalDCGAND(nn.Module):
    """Right, with F.leaky_relu and torch.sigmoid instead of modules."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(1, 8, 4, 2, 1), nn.Conv2d(8, 16, 4, 2, 1), nn.Conv2d(16, 32, 3, 2, 1)
        self.b2, self.b3, self.c4 = nn.BatchNorm2d(16), nn.BatchNorm2d(32), nn.Conv2d(32, 1, 4)

    def forward(self, x):
        x = nn.functional.leaky_relu(self.c1(x), 0.2)
        x = nn.functional.leaky_relu(self.b2(self.c2(x)), 0.2)
        x = nn.functional.leaky_relu(self.b3(self.c3(x)), 0.2)
        return torch.sigmoid(self.c4(x)).view(-1, 1)


def test_dcgan_discriminator_checks():
    check = checks.check_dcgan_discriminator
    assert run(check, lambda: DCGANDiscriminator(width=8))[0]
    assert run(check, dcgan_d())[0]
    assert run(check, FunctionalDCGAND)[0]
    planted = {
        "BatchNorm on the first layer": dcgan_d(first_bn=True),
        "ReLU after convolution 1": dcgan_d(act=nn.ReLU),
        "slope 0.01 after convolution 1": dcgan_d(act=nn.LeakyReLU),
        "ReLU after convolution 2": dcgan_d(later_act=nn.ReLU),
        "pooling": dcgan_d(ending="pool"),
        "a fully connected layer": dcgan_d(ending="fc"),
        "outputs outside (0, 1)": dcgan_d(sigmoid=False),
        "wrong output shape": dcgan_d(flat=False),
        "BatchNorm after the last convolution": dcgan_d(last_bn=True),
    }
    for message, student in planted.items():
        passed, text = run(check, student)
        assert not passed and message in text, (message, text)


def functional_dcgan_d(mistake):
    """FunctionalDCGAND with one mistake written as a plain function in ``forward``,
    where module hooks do not see it."""
    F = nn.functional

    class D(FunctionalDCGAND):
        def __init__(self):
            super().__init__()
            if mistake == "pool":
                self.c1 = nn.Conv2d(1, 8, 3, 1, 1)
            if mistake in ("mean", "matmul"):
                self.c4 = nn.Conv2d(32, 1, 1)
                self.w = nn.Parameter(torch.randn(16, 1) * 0.1)

        def forward(self, x):
            x = self.c1(x)
            if mistake == "pool":
                x = F.max_pool2d(x, 2)
            x = F.leaky_relu(x, 0.2)
            x = F.leaky_relu(self.b2(self.c2(x)), 0.2)
            x = self.c3(x)
            x = F.leaky_relu(x if mistake == "no batchnorm" else self.b3(x), 0.2)
            if mistake == "mean":
                return torch.sigmoid(self.c4(x).mean((2, 3)))
            if mistake == "matmul":
                return torch.sigmoid(self.c4(x).flatten(1) @ self.w)
            return torch.sigmoid(self.c4(x)).view(-1, 1)

    return D


@pytest.mark.parametrize("mistake,message", [
    ("pool", "pooling (max_pool2d in your forward)"),
    ("no batchnorm", "no BatchNorm after convolution 3"),
    ("mean", "a global average or sum over the picture"),
    ("matmul", "a fully connected layer (matmul in your forward)"),
])
def test_dcgan_discriminator_mistakes_written_as_functions(mistake, message):
    passed, text = run(checks.check_dcgan_discriminator, functional_dcgan_d(mistake))
    assert not passed and message in text, text


class InterpolatingDCGAN(nn.Module):
    def __init__(self):
        super().__init__()
        self.up1, self.bn = nn.ConvTranspose2d(100, 8, 7), nn.BatchNorm2d(8)
        self.up2 = nn.ConvTranspose2d(8, 1, 3, 1, 1)

    def forward(self, z):
        h = nn.functional.relu(self.bn(self.up1(z.view(-1, 100, 1, 1))))
        return torch.tanh(self.up2(nn.functional.interpolate(h, scale_factor=4)))


def test_dcgan_generator_mistakes_written_as_functions_or_left_out():
    passed, text = run(checks.check_dcgan_generator, InterpolatingDCGAN)
    assert not passed and "fixed upsampling (interpolate in your forward)" in text, text
    # BatchNorm after the first transposed convolution only (the module check sees one).
    passed, text = run(checks.check_dcgan_generator, lambda: nn.Sequential(
        nn.Unflatten(1, (100, 1, 1)), nn.ConvTranspose2d(100, 8, 7), nn.BatchNorm2d(8), nn.ReLU(),
        nn.ConvTranspose2d(8, 4, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(4, 1, 4, 2, 1), nn.Tanh()))
    assert not passed and "no BatchNorm after transposed convolution 2" in text, text


def test_dcgan_shapes_that_go_astray_get_the_walk_of_shapes():
    down = [nn.Conv2d(1, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(8, 16, 4, 2, 1), nn.BatchNorm2d(16),
            nn.LeakyReLU(0.2)]
    # 7 -> 4 with a 3x3 kernel, then a 3x3 last kernel: a 2 x 2 map, four scores per image,
    # which no .view(-1, 1) mends.
    two_by_two = [nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.LeakyReLU(0.2), nn.Conv2d(32, 1, 3)]
    passed, text = run(checks.check_dcgan_discriminator, lambda: nn.Sequential(
        *down, *two_by_two, nn.Sigmoid(), nn.Flatten(0), nn.Unflatten(0, (-1, 1))))
    assert not passed and "yours gives (16, 1)" in text and ".view(-1, 1)" not in text, text
    assert "(4, 32, 4, 4) -> (4, 1, 2, 2). The aim: (N, 1, 28, 28)" in text, text
    # A 4x4 kernel on the 7 x 7 map gives 3 x 3, where the last 4x4 kernel does not fit.
    passed, text = run(checks.check_dcgan_discriminator, lambda: nn.Sequential(
        *down, nn.Conv2d(16, 32, 4, 2, 1), nn.BatchNorm2d(32), nn.LeakyReLU(0.2), nn.Conv2d(32, 1, 4),
        nn.Sigmoid(), nn.Flatten()))
    assert not passed and "the shapes do not fit" in text, text
    assert "-> (4, 32, 3, 3), then Conv2d(32, 1, kernel_size=(4, 4)" in text, text
    # Too few channels reach a layer.
    passed, text = run(checks.check_dcgan_generator, lambda: nn.Sequential(
        nn.Unflatten(1, (100, 1, 1)), nn.ConvTranspose2d(100, 8, 7), nn.BatchNorm2d(8), nn.ReLU(),
        nn.ConvTranspose2d(16, 1, 4, 4), nn.Tanh()))
    assert not passed and "take (4, 100, 1, 1) -> (4, 8, 7, 7), then ConvTranspose2d(16, 1" in text, text
    # Stride 2 with kernel 4 from 4 x 4 doubles to 8, not 7: 32 x 32 at the end.
    passed, text = run(checks.check_dcgan_generator, lambda: nn.Sequential(
        nn.Unflatten(1, (100, 1, 1)), nn.ConvTranspose2d(100, 8, 4), nn.BatchNorm2d(8), nn.ReLU(),
        nn.ConvTranspose2d(8, 4, 4, 2, 1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.ConvTranspose2d(4, 1, 4, 4), nn.Tanh()))
    assert not passed and "yours gives (4, 1, 32, 32)" in text, text
    assert "(4, 8, 4, 4) -> (4, 4, 8, 8) -> (4, 1, 32, 32). The aim: (N, 100, 1, 1)" in text, text


# -------------------------------------------------------------- robustness
def test_unwritten_and_crashing_code_gets_a_message(capsys):
    def todo(*args):
        raise NotImplementedError

    def crash(*args):
        return 1 / 0

    passed, text = run(checks.check_train_step, todo)
    assert not passed and "not implemented yet" in text
    passed, text = run(checks.check_train_step, crash)
    assert not passed and "ZeroDivisionError" in text and "line" in text


class TupleG(FCGenerator):
    def forward(self, z):
        return (super().forward(z),)


def test_a_result_the_check_cannot_use_is_not_blamed_on_a_line_of_the_check():
    # The check trips over the tuple inside its own code; "your code raised ... (line
    # of the check)" would send the student looking for a line they never wrote.
    passed, text = run(checks.check_generator, TupleG)
    assert not passed and "what your code returned could not be checked" in text
    assert "'tuple'" in text and "generator_exercise.hint()" in text and "line" not in text


class UnflattenedD(nn.Module):
    def __init__(self, logits=False):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(784, 512), nn.LeakyReLU(0.2), nn.Linear(512, 256),
                                 nn.LeakyReLU(0.2), nn.Linear(256, 1), nn.Sigmoid())

    def forward(self, x):
        return self.net(x)  # x is (N, 1, 28, 28): never flattened


class MismatchedG(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(100, 128), nn.Linear(256, 784)

    def forward(self, z):
        h = self.a(z)
        return self.b(h)  # the line to point at, not torch's linear.py


def test_shape_slips_get_the_fix_and_crashes_point_at_their_line():
    passed, text = run(checks.check_discriminator, UnflattenedD)
    assert not passed and "to a Linear layer unflattened" in text and "x.view(x.shape[0], -1)" in text
    no_view = nn.Sequential(nn.ConvTranspose2d(100, 8, 7), nn.BatchNorm2d(8), nn.ReLU(),
                            nn.ConvTranspose2d(8, 1, 4, 4), nn.Tanh())
    passed, text = run(checks.check_dcgan_generator, lambda: no_view)
    assert not passed and "z.view(z.shape[0], -1, 1, 1)" in text
    passed, text = run(checks.check_train_step, lambda g, d, *rest: MismatchedG()(torch.randn(2, 100)))
    their_line = MismatchedG.forward.__code__.co_firstlineno + 2
    assert not passed and f"(line {their_line}: return self.b(h)" in text


@pytest.mark.parametrize("exercise", checks.EXERCISES, ids=lambda e: e.name)
def test_the_stuck_line_names_the_exercise_object(exercise, capsys):
    # A check cell prints its feedback, then raises, so that nbgrader counts it as failed.
    with pytest.raises(checks.NotYet, match=f"{exercise.name}: not yet, see the feedback above"):
        exercise.check(lambda *a: 1 / 0)
    named = capsys.readouterr().out.split("(stuck? ")[1].split(".hint()")[0]
    assert getattr(checks, named) is exercise


def test_a_passed_check_cell_returns_its_result(capsys):
    result = checks.generator_exercise.check(FCGenerator)
    assert result.passed and capsys.readouterr().out.startswith("[generator] correct")


def test_each_exercise_is_importable_as_its_name_exercise():
    # the assignments' notebooks import their checks as NAME_exercise
    for exercise in checks.EXERCISES:
        assert getattr(checks, f"{exercise.name}_exercise") is exercise


def test_hint_and_solution(capsys):
    checks.train_step_exercise.hint()
    checks.train_step_exercise.solution()
    out = capsys.readouterr().out
    assert "fake.detach()" in out and "def train_step(" in out


def test_checks_leave_global_rng_alone():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    checks.check_generator(FCGenerator)
    assert torch.equal(before, torch.get_rng_state())


def test_a_checked_instance_leaves_the_check_as_it_came():
    for check, net in ((checks.check_dcgan_generator, DCGANGenerator(width=8)),
                       (checks.check_dcgan_discriminator, DCGANDiscriminator(width=8)),
                       (checks.check_generator, FCGenerator())):
        before = {k: v.clone() for k, v in net.state_dict().items()}
        assert run(check, net)[0]
        assert net.training  # not left in eval mode, where BatchNorm would stop learning
        assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
