"""gan_helpers.step: the seed's step, the R1 step, train_briefly, standing statistics."""

import math

import pytest
import torch
from torch import nn

from gan_helpers.losses import adversarial_loss, r1_penalty
from gan_helpers.models import build_models
from gan_helpers.config import TrainConfig
from gan_helpers.step import StepStats, standing_statistics, r1_step, train_briefly, train_step
from training_helpers import Spy, models_and_opts


@pytest.mark.parametrize("model", ["fc", "dcgan"])
def test_d_step_leaves_g_gradients_untouched(model):
    g, d, og, od = models_and_opts(model)
    snapshot = {}
    spy_g = Spy(og, lambda: snapshot.update({n: p.grad.clone() for n, p in g.named_parameters()}))
    real, z = torch.rand(8, 1, 28, 28) * 2 - 1, torch.randn(8, 100)
    train_step(g, d, spy_g, od, adversarial_loss("bce"), real, z)
    assert snapshot, "G step ran"
    for name, p in g.named_parameters():
        assert torch.equal(p.grad, snapshot[name]), f"D's step changed G's gradient {name}"


@pytest.mark.parametrize("model", ["fc", "dcgan"])
def test_g_step_leaves_d_weights_unchanged(model):
    g, d, og, od = models_and_opts(model)
    before = {n: p.clone() for n, p in d.named_parameters()}
    at_d_step = {}
    spy_d = Spy(od, lambda: at_d_step.update({n: p.clone() for n, p in d.named_parameters()}))
    train_step(g, d, og, spy_d, adversarial_loss("bce"), torch.rand(8, 1, 28, 28) * 2 - 1, torch.randn(8, 100))
    for name in before:
        assert torch.equal(before[name], at_d_step[name]), f"G's step changed D's weight {name}"
    assert any(not torch.equal(before[n], p) for n, p in d.named_parameters()), "D's own step updates D"
    assert all(p.requires_grad for p in d.parameters()), "D is trainable again after the G step"


def seed_step(g, d, og, od, crit, real, z):
    """gan.py's step, verbatim in structure."""
    og.zero_grad()
    gen_imgs = g(z)
    g_loss = crit(d(gen_imgs), torch.ones(real.shape[0], 1))
    g_loss.backward()
    og.step()
    od.zero_grad()
    real_loss = crit(d(real), torch.ones(real.shape[0], 1))
    fake_loss = crit(d(gen_imgs.detach()), torch.zeros(real.shape[0], 1))
    ((real_loss + fake_loss) / 2).backward()
    od.step()


@pytest.mark.parametrize("loss", ["bce", "bce-logits"])
def test_train_step_matches_the_seed_step(loss):
    torch.manual_seed(1)
    g1, d1 = build_models("fc", logits=loss == "bce-logits")
    g2, d2 = build_models("fc", logits=loss == "bce-logits")
    g2.load_state_dict(g1.state_dict()), d2.load_state_dict(d1.state_dict())
    opts = [torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999)) for m in (g1, d1, g2, d2)]
    crit = adversarial_loss(loss)
    for i in range(5):
        real, z = torch.rand(16, 1, 28, 28) * 2 - 1, torch.randn(16, 100)
        train_step(g1, d1, opts[0], opts[1], crit, real, z)
        seed_step(g2, d2, opts[2], opts[3], crit, real, z)
    for a, b in zip(list(g1.parameters()) + list(d1.parameters()), list(g2.parameters()) + list(d2.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_train_briefly_runs_the_given_step_across_epochs(mnist_small):
    calls = []

    def step(g, d, opt_g, opt_d, criterion, real, z):
        calls.append((real.shape, z.shape, opt_g.param_groups[0]["lr"], opt_g.param_groups[0]["betas"]))
        return train_step(g, d, opt_g, opt_d, criterion, real, z)

    torch.manual_seed(0)
    g, d = build_models("fc")
    before = [p.clone() for p in g.parameters()]
    stats = train_briefly(g, d, 10, step=step, data=mnist_small)  # 8 batches an epoch
    assert len(calls) == 10 and isinstance(stats, StepStats)
    assert calls[0] == ((64, 1, 28, 28), (64, 100), 0.0002, (0.5, 0.999))
    assert all(not torch.equal(a, b) for a, b in zip(before, g.parameters()))


def test_step_stats_are_probabilities():
    g, d, og, od = models_and_opts()
    s = train_step(g, d, og, od, adversarial_loss("bce"), torch.rand(8, 1, 28, 28) * 2 - 1, torch.randn(8, 100))
    assert 0 <= s.d_real.item() <= 1 and 0 <= s.d_fake.item() <= 1 and s.g_loss.item() > 0


@pytest.mark.parametrize("real_label", [1.0, 0.9])
def test_train_step_scores_real_images_against_real_label(real_label):
    from gan_helpers.losses import discriminator_loss

    g, d, og, od = models_and_opts()
    real, z = torch.rand(8, 1, 28, 28) * 2 - 1, torch.randn(8, 100)
    with torch.no_grad():  # D's step sees G's fakes from before G's update
        expected = discriminator_loss(nn.BCELoss(), d(real), d(g(z)), real_label)
    s = train_step(g, d, og, od, adversarial_loss("bce"), real, z, real_label=real_label)
    assert s.d_loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_standing_statistics_without_batchnorm_changes_nothing():
    g, _ = build_models("fc", batchnorm=False)
    before = [p.clone() for p in g.state_dict().values()]
    assert standing_statistics(g) is g
    assert all(torch.equal(a, b) for a, b in zip(before, g.state_dict().values()))


def test_r1_step_flattens_d_around_real_images():
    torch.manual_seed(0)
    d = build_models("fc")[1]
    real = torch.rand(32, 1, 28, 28) * 2 - 1
    opt = torch.optim.Adam(d.parameters(), lr=0.001)
    before = r1_penalty(d, real).item()
    returned = [r1_step(d, opt, real, 1.0, every=1) for _ in range(5)]
    assert returned[0].item() == pytest.approx(before) and not returned[0].requires_grad
    assert r1_penalty(d, real).item() < 0.5 * before
    # Old checkpoints trained without it; it must be a real weight of 0 or more.
    assert TrainConfig.from_dict({"model": "dcgan"}).r1 == 0.0
    for bad in (-0.1, math.inf, math.nan):
        with pytest.raises(ValueError, match="r1 must be 0"):
            TrainConfig.for_recipe("course", r1=bad)
