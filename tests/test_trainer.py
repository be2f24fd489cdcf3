"""gan_helpers.trainer: the loop, its stopping rules and hooks, resume from every kind of
stop, the weight average."""

import math
import os
import signal

import pytest
import torch
from torch import nn

from gan_helpers.config import TrainConfig
from gan_helpers.step import train_briefly, train_step
from gan_helpers.trainer import GANTrainer, TrainingDiverged
from gan_helpers.checkpoints import load_checkpoint, load_generator
from training_helpers import params, small


def test_trainer_passes_label_smoothing_to_the_step(mnist_small, monkeypatch):
    import gan_helpers.trainer as training

    seen = []

    def spy(*args, **kwargs):
        seen.append(args[8])
        return train_step(*args, **kwargs)

    monkeypatch.setattr(training, "train_step", spy)
    GANTrainer(small(label_smoothing=0.1), data=mnist_small).fit(steps=2, progress=False)
    GANTrainer(small(), data=mnist_small).fit(steps=1, progress=False)
    assert seen == [0.9, 0.9, 1.0]
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        small(label_smoothing=0.5)


def test_same_seed_same_images(mnist_small):
    a = GANTrainer(small(seed=7), data=mnist_small).fit(steps=10, progress=False)
    b = GANTrainer(small(seed=7), data=mnist_small).fit(steps=10, progress=False)
    c = GANTrainer(small(seed=8), data=mnist_small).fit(steps=10, progress=False)
    assert torch.equal(a.fixed_samples(), b.fixed_samples())
    assert not torch.equal(a.fixed_samples(), c.fixed_samples())
    assert a.history == b.history


def test_progress_bar_written_to_a_file_is_not_redrawn_every_tenth_of_a_second(
        mnist_small, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    # Captured stderr is no terminal, as with `make train > train.log`.
    GANTrainer(small(), data=mnist_small).fit(steps=60)
    bars = capsys.readouterr().err.replace("\r", "\n").split("\n")
    drawn = [line for line in bars if line.startswith("FC GAN:")]
    # The bar at its start and at its end: a run of a few seconds has no 30-s update.
    assert len(drawn) == 2 and "60/60" in drawn[-1]


@pytest.mark.parametrize("model,recipe,decay,ramp,r1", [
    ("fc", "course", 0, 0, 0), ("dcgan", "course", 0, 0, 0), ("fc", "seed", 0, 0, 0),
    ("fc", "course", 11, 0, 0), ("fc", "course", 0, 8, 0), ("dcgan", "course", 0, 0, 0.05),
])
def test_resume_is_bit_exact(tmp_path, mnist_small, model, recipe, decay, ramp, r1):
    # 512 / 48: resume crosses an epoch edge; with decay, the lr falls from step 3 to 0 at
    # 14; with the ramp, D's shift grows from 1 to 2 pixels at step 8, after the resume;
    # with r1, its extra D update comes at step 16, after the resume.
    cfg = small(model, recipe=recipe, batch_size=48, decay_start=3 if decay else 0,
                decay_steps=decay, augment_ramp=ramp, r1=r1)
    end = 17 if r1 else 14
    straight = GANTrainer(cfg, data=mnist_small).fit(steps=end, progress=False)

    first = GANTrainer(cfg, data=mnist_small, out_dir=tmp_path).fit(steps=6, progress=False)
    path = first.save_checkpoint()
    del first
    torch.manual_seed(12345)  # whatever happens to the global RNG in between
    resumed = GANTrainer.from_checkpoint(path, data=mnist_small).fit(steps=end, progress=False)

    assert resumed.step == straight.step == end
    for a, b in zip(params(straight), params(resumed)):
        assert torch.equal(a, b)
    for opt in ("opt_g", "opt_d"):
        sa, sb = getattr(straight, opt).state_dict()["state"], getattr(resumed, opt).state_dict()["state"]
        for k in sa:
            assert torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"])
    assert straight.history == resumed.history


# bce: BCELoss refuses the NaN probabilities itself; bce-logits: only the trainer's check sees them
@pytest.mark.parametrize("loss", ["bce", "bce-logits"])
def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path, mnist_small, loss):
    t = GANTrainer(small(loss=loss), data=mnist_small, out_dir=tmp_path).fit(steps=3, progress=False)
    with torch.no_grad():
        next(t.discriminator.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"diverged at step 4.*last good checkpoint is kept at .*checkpoint.pt.*lower --lr"):
        t.fit(steps=10, progress=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 3
    assert all(torch.isfinite(v).all() for v in state["discriminator"].values())


def test_hooks_grids_and_early_vs_late(tmp_path, mnist_small):
    events = []
    t = GANTrainer(small(sample_interval=4), data=mnist_small, out_dir=tmp_path)
    t.fit(steps=10, hooks=[events.append], hook_every=3, progress=False)
    assert [e.step for e in events] == [3, 6, 9, 10] and events[-1].final
    e = events[0]
    assert math.isfinite(e.g_loss) and 0 <= e.d_fake <= 1 and e.epoch == 3 / t.steps_per_epoch
    samples = e.samples()
    assert samples.shape == (64, 1, 28, 28) and samples.abs().max() <= 1
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == ["early_vs_late.png", "step_0000004.png", "step_0000008.png", "step_0000010.png"]
    from PIL import Image

    assert Image.open(tmp_path / "step_0000004.png").size == (242, 242)  # 8x8 grid of 28px + padding
    film = Image.open(tmp_path / "training.gif")  # the three grids, in order, labelled
    assert film.n_frames == 3 and film.size == (242, 260)
    assert [film.seek(i) or film.info["duration"] for i in range(3)] == [250, 250, 2000]


def test_stopping_rules(mnist_small):
    said = []
    t = GANTrainer(small(), data=mnist_small, log=said.append)
    assert t.steps_per_epoch == 8
    t.fit(epochs=1.5, progress=False)
    assert t.step == 12 and said == []
    t.fit(epochs=1.5, steps=100, progress=False)
    assert t.step == 12, "epochs are a total, not more of them"
    assert said == [
        "note: nothing to train: the run is already at step 12 and its limit is step 12 "
        "(limits in steps and epochs count from step 0). For 1,000 more steps ask for "
        "1012: steps=1012, or --max-steps 1012."
    ]
    t.fit(seconds=0.2, progress=False)
    assert t.step > 12
    with pytest.raises(ValueError, match="stopping rule"):
        t.fit()
    # what a notebook cell ending in t.fit(...) shows
    assert repr(t) == f"GANTrainer(FC GAN, course recipe, mnist, step {t.step}, out_dir=None)"
    dcgan = GANTrainer(TrainConfig.for_recipe("course", model="dcgan"), data=mnist_small,
                       log=lambda _: None)
    assert repr(dcgan).startswith("GANTrainer(DCGAN, course recipe, mnist, step 0,")


def test_sigint_stops_cleanly_and_saves(tmp_path, mnist_small, capsys):
    def interrupt(event):
        if event.step == 3 and not event.final:
            os.kill(os.getpid(), signal.SIGINT)

    t = GANTrainer(small(), data=mnist_small, out_dir=tmp_path)
    t.fit(steps=50, hooks=[interrupt], progress=False)
    assert t.interrupted and t.step == 3
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3
    assert "Interrupted at step 3" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    t.fit(steps=5, progress=False)
    assert t.step == 5 and not t.interrupted


def test_ema_sampler(mnist_small, tmp_path):
    t = GANTrainer(small(ema=0.9), data=mnist_small, out_dir=tmp_path).fit(steps=20, progress=False)
    g = dict(t.generator.named_parameters())
    for name, p in t.sampler.named_parameters():
        assert not p.requires_grad
        assert not torch.equal(p, g[name]), "the average lags behind G"
    loaded, _ = load_generator(tmp_path / "checkpoint.pt")
    torch.testing.assert_close(loaded(t.fixed_noise), t.fixed_samples())
    off = GANTrainer(small(ema=0.0), data=mnist_small)
    assert off.sampler is off.generator
    assert TrainConfig.for_recipe("seed").ema == 0.0


def test_ema_warm_up_spans_a_tenth_of_the_run(mnist_small):
    """Early on the average's decay is (1 + t) / (1/ema_rampup + t), whatever the cap
    ``ema``: the course's 0.9999 and the old 0.999 give the same average until the
    warm-up reaches the cap; a cap below the warm-up's decay gives another one, and so
    does another ramp-up."""
    def average(ema, **kw):
        t = GANTrainer(small(ema=ema, sample_interval=1000, **kw), data=mnist_small)
        t.fit(steps=12, progress=False)
        return torch.cat([p.flatten() for p in t.ema_generator.parameters()])

    assert TrainConfig().ema == 0.9999 and TrainConfig().ema_rampup == 0.1
    assert torch.equal(average(0.9999), average(0.999))
    assert not torch.equal(average(0.9999), average(0.5))
    assert not torch.equal(average(0.9999), average(0.9999, ema_rampup=0.2))


def test_ema_rampup_of_one_half_averages_every_step_alike(mnist_small):
    # decay (1 + t) / (2 + t): after k steps, (2 G_0 + G_1 + ... + G_k) / (k + 2)
    t = GANTrainer(small(ema=0.9999, ema_rampup=0.5, sample_interval=1000), data=mnist_small)
    flat = lambda net: torch.cat([p.detach().flatten() for p in net.parameters()])  # noqa: E731
    seen = [2 * flat(t.generator)]
    for _ in range(6):
        t.fit(steps=t.step + 1, progress=False)
        seen.append(flat(t.generator))
    torch.testing.assert_close(flat(t.ema_generator), sum(seen) / 8)


def _normalised_bn_inputs(generator, noise):
    """Per BatchNorm layer of ``generator`` (eval mode): the per-channel mean and variance
    of its inputs on ``noise`` after normalising them with the layer's running statistics."""
    seen = []
    bns = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    handles = [bn.register_forward_hook(lambda m, i, o: seen.append((m, i[0]))) for bn in bns]
    generator.eval()
    with torch.no_grad():
        generator(noise)
    for h in handles:
        h.remove()
    out = []
    for bn, x in seen:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        x = (x - bn.running_mean.view(shape)) / (bn.running_var.view(shape) + bn.eps).sqrt()
        dims = [0] + list(range(2, x.dim()))
        out.append((x.mean(dims), x.var(dims)))
    assert out, "the generator has BatchNorm layers"
    return out


@pytest.mark.parametrize("model", ["fc", "dcgan"])
def test_sampler_batchnorm_statistics_fit_the_average(mnist_small, model):
    # The weight average's BatchNorm layers normalise with statistics of its own
    # activations (standing statistics), not G's: on fresh noise their inputs come out
    # with mean ~0 and variance ~1 per channel.
    t = GANTrainer(small(model, ema=0.9), data=mnist_small).fit(steps=20, progress=False)
    noise = torch.randn(4096, 100, generator=torch.Generator().manual_seed(5))
    for mean, var in _normalised_bn_inputs(t.sampler, noise):
        assert mean.abs().max() < 0.15 and (var - 1).abs().max() < 0.25
    # Control: with other statistics (here PyTorch's initial 0 and 1) the check fails.
    for m in t.sampler.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
    assert any((var - 1).abs().max() > 0.25 for _, var in _normalised_bn_inputs(t.sampler, noise))
    # Read again at a later step, the statistics are recomputed for the new weights.
    t.fit(steps=25, progress=False)
    for mean, var in _normalised_bn_inputs(t.sampler, noise):
        assert mean.abs().max() < 0.15 and (var - 1).abs().max() < 0.25


def test_reading_the_sampler_never_changes_training(mnist_small):
    watched = GANTrainer(small(ema=0.9), data=mnist_small)
    watched.fit(steps=12, progress=False, hooks=[lambda e: e.samples()])
    plain = GANTrainer(small(ema=0.9), data=mnist_small).fit(steps=12, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(params(watched), params(plain)))


def test_linear_lr_decay(mnist_small):
    t = GANTrainer(small(lr=0.001, g_lr_factor=3.0, decay_start=4, decay_steps=8),
                   data=mnist_small)
    assert [t.learning_rate(s) for s in (0, 4, 6, 12, 50)] == pytest.approx(
        [0.001, 0.001, 0.00075, 0.0, 0.0])
    seen = []
    t.fit(steps=12, progress=False, hooks=[lambda e: seen.append(
        (e.step, e.trainer.opt_g.param_groups[0]["lr"], e.trainer.opt_d.param_groups[0]["lr"]))])
    # The hook runs after step k (1-based), which trained with learning_rate(k - 1);
    # G's lr keeps its factor all the way down.
    for step, lr_g, lr_d in seen[:-1]:
        assert lr_d == pytest.approx(t.learning_rate(step - 1))
        assert lr_g == pytest.approx(3.0 * t.learning_rate(step - 1))
    assert seen[-2][2] == pytest.approx(0.001 / 8)
    # The lr is 0 from step 12 on: training stops there and says so.
    said = []
    t.log = said.append
    t.fit(steps=20, progress=False)
    assert t.step == 12
    assert len(said) == 1 and "Stopped at step 12" in said[0]
    t.fit(seconds=5, progress=False)
    assert t.step == 12
    constant = GANTrainer(small(lr=0.001), data=mnist_small)
    assert constant.learning_rate(10**6) == 0.001


def test_generator_lr_factor(mnist_small):
    course = GANTrainer(small(), data=mnist_small)
    assert course.config.lr == 0.0005 and course.config.g_lr_factor == 2.0
    assert course.opt_d.param_groups[0]["lr"] == pytest.approx(0.0005)
    assert course.opt_g.param_groups[0]["lr"] == pytest.approx(0.001)
    assert course.opt_g.param_groups[0]["betas"] == (0.0, 0.999)
    dcgan = GANTrainer(TrainConfig.for_recipe("course", model="dcgan"), data=mnist_small)
    assert dcgan.opt_d.param_groups[0]["lr"] == pytest.approx(0.001)
    assert dcgan.opt_g.param_groups[0]["lr"] == pytest.approx(0.001)  # one lr: doubling bought nothing
    assert dcgan.opt_g.param_groups[0]["betas"] == dcgan.opt_d.param_groups[0]["betas"] == (0.0, 0.999)
    seed = GANTrainer(TrainConfig.for_recipe("seed"), data=mnist_small)
    assert seed.opt_g.param_groups[0]["lr"] == seed.opt_d.param_groups[0]["lr"] == 0.0002
    assert seed.opt_g.param_groups[0]["betas"] == (0.5, 0.999)
    # G's lr follows --lr: the factor, not a second absolute value, is the recipe.
    assert GANTrainer(small(lr=0.0002), data=mnist_small).opt_g.param_groups[0]["lr"] == \
        pytest.approx(0.0004)
    # Checkpoints from before the option trained both networks with one lr.
    legacy = {k: v for k, v in vars(course.config).items() if k != "g_lr_factor"}
    assert TrainConfig.from_dict(legacy).g_lr_factor == 1.0
    with pytest.raises(ValueError, match="g_lr_factor must be a positive number"):
        TrainConfig.for_recipe("course", g_lr_factor=0)


def test_r1_updates_d_once_every_16_steps_and_leaves_g_alone(mnist_small, monkeypatch):
    import gan_helpers.trainer as training

    calls = []
    real_r1_step = training.r1_step
    monkeypatch.setattr(training, "r1_step", lambda d, opt, real, gamma: calls.append(
        (gamma, tuple(real.shape))) or real_r1_step(d, opt, real, gamma))
    plain = GANTrainer(small("dcgan", r1=0.0), data=mnist_small).fit(steps=16, progress=False)
    assert calls == []
    with_r1 = GANTrainer(small("dcgan", r1=0.05), data=mnist_small).fit(steps=15, progress=False)
    assert calls == []
    with_r1.fit(steps=16, progress=False)
    assert calls == [(0.05, (64, 1, 28, 28))]
    # Step 16 itself is the seed's step; the extra update after it changed D only.
    assert all(torch.equal(a, b) for a, b in zip(plain.generator.parameters(),
                                                  with_r1.generator.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(plain.discriminator.parameters(),
                                                      with_r1.discriminator.parameters()))


def test_dcgan_trains_channels_last_and_resumes_older_checkpoints(tmp_path, mnist_small):
    t = GANTrainer(small("dcgan"), data=mnist_small, out_dir=tmp_path)
    conv_weights = lambda tr: [p for p in tr.generator.parameters() if p.dim() == 4]  # noqa: E731
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights(t))
    # A checkpoint from before the switch holds tensors in the default layout.
    for net in (t.generator, t.discriminator, t.sampler):
        net.to(memory_format=torch.contiguous_format)
    t.fit(steps=2, progress=False)
    resumed = GANTrainer.from_checkpoint(t.checkpoint_path, data=mnist_small).fit(steps=4, progress=False)
    assert resumed.step == 4
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights(resumed))
    assert all(torch.isfinite(p).all() for p in resumed.generator.parameters())


def test_fit_takes_one_hook_without_a_list_and_refuses_bad_limits(mnist_small):
    t = GANTrainer(small(), data=mnist_small)
    events = []
    t.fit(steps=4, hooks=events.append, hook_every=2, progress=False)  # not [events.append]
    assert [(e.step, e.final) for e in events] == [(2, False), (4, False), (4, True)]
    with pytest.raises(ValueError, match=r"steps must be a number, got '10' \(str\)"):
        t.fit(steps="10", progress=False)
    with pytest.raises(ValueError, match="hook_every must be a positive integer"):
        t.fit(steps=10, hooks=events.append, hook_every=0, progress=False)
    assert t.step == 4


def _same_run(a, b):
    assert a.step == b.step
    for x, y in zip(params(a), params(b)):
        assert torch.equal(x, y)
    assert a.history == b.history


def test_resume_after_ctrl_c_in_the_middle_of_an_epoch_is_bit_exact(tmp_path, mnist_small):
    cfg = small(batch_size=48)  # 512 / 48: 11 steps an epoch, the stop at 5 is mid-epoch
    straight = GANTrainer(cfg, data=mnist_small).fit(steps=14, progress=False)

    def ctrl_c(event):
        if event.step == 5 and not event.final:
            os.kill(os.getpid(), signal.SIGINT)

    stopped = GANTrainer(cfg, data=mnist_small, out_dir=tmp_path, log=lambda _: None)
    stopped.fit(steps=14, hooks=[ctrl_c], progress=False)
    assert stopped.interrupted and stopped.step == 5
    resumed = GANTrainer.from_checkpoint(tmp_path, data=mnist_small, log=lambda _: None)
    _same_run(straight, resumed.fit(steps=14, progress=False))
    assert list(tmp_path.glob(".*.tmp")) == []


def test_resume_from_a_periodic_checkpoint_is_bit_exact(tmp_path, mnist_small):
    cfg = small(batch_size=48)
    straight = GANTrainer(cfg, data=mnist_small).fit(steps=14, progress=False)
    kept = tmp_path / "kept.pt"

    def keep_the_step_6_checkpoint(event):  # hooks run before their step's periodic save
        if event.step == 7:
            kept.write_bytes((tmp_path / "run" / "checkpoint.pt").read_bytes())

    run = GANTrainer(cfg, data=mnist_small, out_dir=tmp_path / "run", checkpoint_every=0)
    run.fit(steps=9, hooks=[keep_the_step_6_checkpoint], progress=False)
    assert load_checkpoint(kept)["step"] == 6
    resumed = GANTrainer.from_checkpoint(kept, data=mnist_small, out_dir=tmp_path / "again")
    _same_run(straight, resumed.fit(steps=14, progress=False))


def test_a_non_finite_weight_never_reaches_a_checkpoint(tmp_path, mnist_small, monkeypatch):
    import gan_helpers.trainer as trainer_module

    def step_that_breaks_d_at_step_5(generator, discriminator, *args):
        stats = train_step(generator, discriminator, *args)
        if t.step == 4:  # the step being taken is the 5th; its losses stay finite
            with torch.no_grad():
                next(discriminator.parameters())[0, 0] = float("inf")
        return stats

    monkeypatch.setattr(trainer_module, "train_step", step_that_breaks_d_at_step_5)
    t = GANTrainer(small(), data=mnist_small, out_dir=tmp_path, checkpoint_every=0)
    with pytest.raises(TrainingDiverged, match="diverged at step 5: a weight of G or D is no "
                                               "longer finite"):
        t.fit(steps=10, progress=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 4
    for net in ("generator", "discriminator", "generator_ema"):
        assert all(torch.isfinite(v).all() for v in state[net].values() if v.is_floating_point())


def test_notebooks_released_before_the_split_still_import_from_training():
    import importlib
    import sys
    import warnings

    sys.modules.pop("gan_helpers.training", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        training = importlib.import_module("gan_helpers.training")
    assert training.train_briefly is train_briefly and training.GANTrainer is GANTrainer
    assert any(issubclass(w.category, DeprecationWarning) and "gan_helpers.config" in str(w.message)
               for w in caught)
