import pytest
import torch

from gan_helpers.augment import translate
from gan_helpers.losses import adversarial_loss
from gan_helpers.models import build_models
from gan_helpers.config import TrainConfig
from gan_helpers.step import train_step
from gan_helpers.trainer import GANTrainer


def dot_images(n, row=10, col=12):
    x = torch.full((n, 1, 28, 28), -1.0)
    x[:, 0, row, col] = 1.0
    return x


def test_translate_moves_each_image_by_at_most_max_shift():
    y = translate(dot_images(2000), 2, torch.Generator().manual_seed(0))
    assert y.shape == (2000, 1, 28, 28)
    assert ((y == 1.0).flatten(1).sum(1) == 1).all(), "the dot survives, exactly once"
    assert ((y == -1.0).flatten(1).sum(1) == 783).all(), "the rest stays background"
    where = (y[:, 0] == 1.0).nonzero()[:, 1:]
    shifts = where - torch.tensor([10, 12])
    assert shifts.abs().max() == 2
    assert len({tuple(s) for s in shifts.tolist()}) == 25, "all 5 x 5 shifts are drawn"


def test_translate_fills_with_background_and_is_seeded():
    x = torch.rand(64, 1, 28, 28) * 2 - 1
    a = translate(x, 3, torch.Generator().manual_seed(5))
    b = translate(x, 3, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    # Shifted images are the originals' pixels (and -1 moved in from the border).
    moved = ~torch.isclose(a, x).flatten(1).all(1)
    assert moved.float().mean() > 0.9
    assert translate(x, 0) is x


def test_translate_passes_gradients_to_the_moved_pixels():
    x = torch.zeros(8, 1, 28, 28, requires_grad=True)
    y = translate(x, 2, torch.Generator().manual_seed(1))
    y.sum().backward()
    # Each input pixel that lands inside the frame gets gradient 1; the others 0.
    assert set(x.grad.unique().tolist()) <= {0.0, 1.0}
    assert (x.grad.flatten(1).sum(1) >= 26 * 26).all()


def test_translate_rejects_bad_input():
    with pytest.raises(ValueError, match="max_shift must be 0 or more"):
        translate(torch.zeros(2, 1, 28, 28), -1)
    with pytest.raises(ValueError, match=r"square images .* got \(2, 784\)"):
        translate(torch.zeros(2, 784), 2)


@pytest.mark.parametrize("model", ["fc", "dcgan"])
def test_discriminator_sees_only_augmented_images(model):
    torch.manual_seed(0)
    g, d = build_models(model, width=8)
    seen = []
    d.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    og = torch.optim.Adam(g.parameters(), lr=1e-3)
    od = torch.optim.Adam(d.parameters(), lr=1e-3)
    calls = []

    def mark(images):  # an "augmentation" whose output is recognisable: pixels >= 99
        calls.append(images.shape[0])
        return images + 100.0

    real, z = torch.rand(8, 1, 28, 28) * 2 - 1, torch.randn(8, 100)
    train_step(g, d, og, od, adversarial_loss("bce-logits"), real, z, augment=mark)
    assert seen and all(x.min() >= 99 for x in seen)
    assert sum(calls) == 3 * 8, "fakes in G's step, reals and fakes in D's step"


def test_trainer_augments_by_config(mnist_small):
    # off in both recipes since the course trains on 60,000 digits (bench/RESULTS.md)
    assert TrainConfig.for_recipe("course").augment == 0 == TrainConfig.for_recipe("seed").augment
    cfg = TrainConfig.for_recipe("course", batch_size=32, augment=2)
    a = GANTrainer(cfg, data=mnist_small).fit(steps=3, progress=False)
    b = GANTrainer(TrainConfig.for_recipe("course", batch_size=32, augment=0),
                   data=mnist_small).fit(steps=3, progress=False)
    assert a.augment is not None and b.augment is None
    assert not torch.equal(a.fixed_samples(), b.fixed_samples())
    # Checkpoints written before the option existed trained without it.
    legacy = {k: v for k, v in vars(cfg).items() if k != "augment"}
    assert TrainConfig.from_dict(legacy).augment == 0
    with pytest.raises(ValueError, match="augment is the largest shift in pixels"):
        TrainConfig.for_recipe("course", augment=8)


def test_augment_ramp_grows_the_shift_one_pixel_at_a_time(mnist_small):
    ramp = TrainConfig.for_recipe("course", augment=3, augment_ramp=5)
    assert [ramp.augment_shift(step) for step in (0, 4, 5, 9, 10, 10**6)] == [1, 1, 2, 2, 3, 3]
    assert TrainConfig.for_recipe("course", augment=2, augment_ramp=0).augment_shift(0) == 2, "no ramp"
    ramped = TrainConfig.for_recipe("course", augment=2, augment_ramp=10000)
    assert [ramped.augment_shift(step) for step in (0, 9999, 10000)] == [1, 1, 2]
    for other in (TrainConfig.for_recipe("seed", augment=2),
                  TrainConfig.for_recipe("course", augment=2),
                  TrainConfig.for_recipe("course", model="dcgan", augment=2)):
        assert other.augment_ramp == 0 and other.augment_shift(0) == 2
    assert TrainConfig.for_recipe("course", augment=0, augment_ramp=5).augment_shift(9) == 0
    trainer = GANTrainer(TrainConfig.for_recipe("course", batch_size=32, augment=2,
                                                augment_ramp=4), data=mnist_small)
    shifts = {}  # steps done -> the largest shift D saw in the step just done
    trainer.fit(steps=6, progress=False, hook_every=1, hooks=[
        lambda event: shifts.update({event.step: event.trainer.augment.keywords["max_shift"]})])
    assert shifts == {1: 1, 2: 1, 3: 1, 4: 1, 5: 2, 6: 2}
    # Checkpoints written before the option existed had no ramp.
    legacy = {k: v for k, v in vars(ramp).items() if k != "augment_ramp"}
    assert TrainConfig.from_dict(legacy).augment_ramp == 0
    with pytest.raises(ValueError, match="augment_ramp must be 0 or more"):
        TrainConfig.for_recipe("course", augment_ramp=-1)
