import math

import pytest
import torch
from torch import nn

from gan_helpers.losses import adversarial_loss, discriminator_loss, generator_loss, r1_penalty, uses_logits
from gan_helpers.models import build_models


def hand_bce(o, t):
    return -sum(ti * math.log(oi) + (1 - ti) * math.log(1 - oi) for oi, ti in zip(o, t)) / len(o)


def test_bce_matches_the_seed_formula():
    o = [0.9, 0.2, 0.6, 0.01]
    t = [1.0, 0.0, 1.0, 0.0]
    got = adversarial_loss("bce")(torch.tensor(o).view(-1, 1), torch.tensor(t).view(-1, 1))
    assert got.item() == pytest.approx(hand_bce(o, t), rel=1e-6)


def test_generator_loss_uses_valid_labels():
    d_fake = torch.tensor([[0.2], [0.7]])
    got = generator_loss(nn.BCELoss(), d_fake)
    assert got.item() == pytest.approx(hand_bce([0.2, 0.7], [1, 1]), rel=1e-6)


def test_discriminator_loss_is_mean_of_real_and_fake():
    d_real, d_fake = torch.tensor([[0.8], [0.6]]), torch.tensor([[0.3], [0.1]])
    got = discriminator_loss(nn.BCELoss(), d_real, d_fake)
    expected = (hand_bce([0.8, 0.6], [1, 1]) + hand_bce([0.3, 0.1], [0, 0])) / 2
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_one_sided_label_smoothing_moves_only_the_real_target():
    d_real, d_fake = torch.tensor([[0.8], [0.95]]), torch.tensor([[0.3], [0.1]])
    got = discriminator_loss(nn.BCELoss(), d_real, d_fake, real_label=0.9)
    expected = (hand_bce([0.8, 0.95], [0.9, 0.9]) + hand_bce([0.3, 0.1], [0, 0])) / 2
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # D's real loss is smallest where D outputs the target itself, not at 1.
    at_target = discriminator_loss(nn.BCELoss(), torch.full((2, 1), 0.9), d_fake, real_label=0.9)
    at_one = discriminator_loss(nn.BCELoss(), torch.full((2, 1), 0.999), d_fake, real_label=0.9)
    assert at_target < at_one


@pytest.mark.parametrize("real_label", [0.5, 1.1, 0.0])
def test_label_smoothing_refuses_impossible_targets(real_label):
    with pytest.raises(ValueError, match=r"real_label must be in \(0.5, 1\]"):
        discriminator_loss(nn.BCELoss(), torch.full((2, 1), 0.5), torch.full((2, 1), 0.5), real_label)


def test_log2_at_equilibrium():
    half = torch.full((8, 1), 0.5)
    assert discriminator_loss(nn.BCELoss(), half, half).item() == pytest.approx(math.log(2))
    assert generator_loss(nn.BCELoss(), half).item() == pytest.approx(math.log(2))


def test_sigmoid_bce_equals_logits_bce():
    logits = torch.randn(16, 1, generator=torch.Generator().manual_seed(0)) * 3
    labels = torch.randint(0, 2, (16, 1), generator=torch.Generator().manual_seed(1)).float()
    a = adversarial_loss("bce")(torch.sigmoid(logits), labels)
    b = adversarial_loss("bce-logits")(logits, labels)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(generator_loss(nn.BCELoss(), torch.sigmoid(logits)),
                               generator_loss(nn.BCEWithLogitsLoss(), logits))
    torch.testing.assert_close(
        discriminator_loss(nn.BCELoss(), torch.sigmoid(logits), torch.sigmoid(-logits)),
        discriminator_loss(nn.BCEWithLogitsLoss(), logits, -logits),
    )


def test_logits_form_stays_finite_when_saturated():
    logit = torch.tensor([[-200.0]], requires_grad=True)
    loss = generator_loss(adversarial_loss("bce-logits"), logit)
    loss.backward()
    assert loss.item() == pytest.approx(200.0)
    assert logit.grad.item() == pytest.approx(-1.0)


def test_loss_switch():
    assert uses_logits("bce-logits") and not uses_logits("bce")
    with pytest.raises(ValueError, match="choose one of bce, bce-logits"):
        adversarial_loss("mse")


def test_logits_given_to_bce_name_the_other_loss():
    bce, logits = adversarial_loss("bce"), torch.tensor([[2.5], [-1.0]])
    assert isinstance(bce, nn.BCELoss)
    probabilities = torch.sigmoid(logits)
    assert bce(probabilities, torch.ones_like(logits)) == nn.BCELoss()(probabilities, torch.ones_like(logits))
    with pytest.raises(ValueError, match=r"from -1 to 2\.5.*BCEWithLogitsLoss \(adversarial_loss\('bce-logits'\)\)"):
        generator_loss(bce, logits)
    with pytest.raises(ValueError, match="BCEWithLogitsLoss"):
        discriminator_loss(bce, probabilities, logits)
    # NaN probabilities are a diverged run, not logits: PyTorch's error stays, for the trainer.
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        generator_loss(bce, torch.tensor([[float("nan")]]))


class LinearD(nn.Module):
    """logit(x) = w . x + b: its R1 penalty is |w|^2 for every image."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(784))

    def logit(self, x):
        return (x.flatten(1) @ self.w).unsqueeze(1) + 0.5


def test_r1_penalty_is_the_squared_gradient_length_on_real_images():
    d = LinearD()
    real = torch.rand(5, 1, 28, 28) * 2 - 1
    penalty = r1_penalty(d, real)
    torch.testing.assert_close(penalty, d.w.detach().pow(2).sum())
    (grad,) = torch.autograd.grad(penalty, d.w)  # reaches D's weights: 2 w
    torch.testing.assert_close(grad, 2 * d.w.detach())
    assert not real.requires_grad  # the caller's batch is left as it was


@pytest.mark.parametrize("model", ["fc", "dcgan"])
def test_discriminators_logit_is_their_score_before_the_sigmoid(model):
    torch.manual_seed(0)
    d = build_models(model, width=8)[1].eval()
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    logits = d.logit(x)
    assert logits.shape == (6, 1)
    torch.testing.assert_close(torch.sigmoid(logits), d(x))
    d_logits = build_models(model, logits=True, width=8)[1].eval()
    d_logits.load_state_dict(d.state_dict())
    torch.testing.assert_close(d_logits.logit(x), d_logits(x))
    assert r1_penalty(d, x) > 0
