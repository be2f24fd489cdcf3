import math
import os
import pickle
import signal
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
import torch
from torch import nn

from gan_helpers.losses import adversarial_loss, r1_penalty
from gan_helpers.models import build_models
from gan_helpers.config import TrainConfig, resolve_device
from gan_helpers.step import StepStats, standing_statistics, r1_step, train_briefly, train_step
from gan_helpers.trainer import GANTrainer, TrainingDiverged
from gan_helpers.checkpoints import CheckpointError, generate, load_checkpoint, load_generator


def small(model="fc", **kw):
    kw.setdefault("batch_size", 64)
    if model == "dcgan":
        kw.setdefault("width", 8)
    return TrainConfig.for_recipe(kw.pop("recipe", "course"), model=model, **kw)


class Spy:
    """Wraps an optimizer and runs a callback just before each step."""

    def __init__(self, opt, before_step):
        self.opt, self.before_step = opt, before_step

    def zero_grad(self, set_to_none=True):
        self.opt.zero_grad(set_to_none=set_to_none)

    def step(self):
        self.before_step()
        self.opt.step()


def models_and_opts(model="fc"):
    torch.manual_seed(0)
    g, d = build_models(model, width=8)
    og = torch.optim.Adam(g.parameters(), lr=1e-3)
    od = torch.optim.Adam(d.parameters(), lr=1e-3)
    return g, d, og, od


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


def params(trainer):
    return [t.clone() for t in list(trainer.generator.state_dict().values())
            + list(trainer.discriminator.state_dict().values())
            + list(trainer.sampler.state_dict().values())]


@pytest.mark.parametrize("model", ["fc", "dcgan"])
def test_generate_runs_the_generator_in_batches(model):
    torch.manual_seed(0)
    g = build_models(model)[0].train()
    whole = generate(g, 250, seed=3, batch_size=250)
    batched = generate(g, 250, seed=3, batch_size=100)
    assert batched.shape == (250, 1, 28, 28) and batched.abs().max() <= 1
    assert torch.allclose(batched, whole, atol=1e-6)  # eval mode: each image on its own
    assert torch.equal(batched, generate(g, 250, seed=3, batch_size=100))
    assert not torch.equal(batched, generate(g, 250, seed=4, batch_size=100))
    assert g.training  # mode restored



@pytest.mark.parametrize("n,batch_size,named", [
    (-1, 1000, "n is how many images"), (1e3, 1000, "n is how many images"),
    (10, 0, "batch_size must be"),
])
def test_generate_refuses_a_count_it_cannot_draw(n, batch_size, named):
    g = build_models("fc")[0]
    with pytest.raises(ValueError, match=named):
        generate(g, n, batch_size=batch_size)
    assert generate(g, 0).shape == (0, 1, 28, 28)  # none is a valid answer to "how many?"


def test_progress_bar_written_to_a_file_is_not_redrawn_every_tenth_of_a_second(
        mnist_small, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    # Captured stderr is no terminal, as with `make train > train.log`.
    GANTrainer(small(), data=mnist_small).fit(steps=60)
    bars = capsys.readouterr().err.replace("\r", "\n").split("\n")
    drawn = [line for line in bars if line.startswith("FC GAN:")]
    # The bar at its start and at its end: a run of a few seconds has no 30-s update.
    assert len(drawn) == 2 and "60/60" in drawn[-1]

def test_a_students_own_generator_without_latent_dim_takes_the_courses_noise():
    # A generator written in an exercise need not carry the course's latent_dim attribute.
    class Student(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(100, 784)

        def forward(self, z):
            return torch.tanh(self.layer(z)).view(-1, 1, 28, 28)

    torch.manual_seed(0)
    images = generate(Student(), 5, seed=0)
    assert images.shape == (5, 1, 28, 28) and images.abs().max() <= 1


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


def test_checkpoint_round_trip_and_contents(tmp_path, mnist_small):
    t = GANTrainer(small(), data=mnist_small, out_dir=tmp_path).fit(steps=3, progress=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert {"generator", "discriminator", "opt_g", "opt_d", "noise_rng", "torch_rng", "step",
            "history", "config"} <= set(state)
    assert state["step"] == 3 and state["config"]["model"] == "fc"
    assert len(state["history"]["g_loss"]) == 3
    g, cfg = load_generator(tmp_path / "checkpoint.pt")
    assert cfg == t.config
    torch.testing.assert_close(g(t.fixed_noise), t.fixed_samples())


def test_a_run_from_another_kind_of_device_continues_with_fresh_noise(
        tmp_path, mnist_small, as_if_trained_on_cuda):
    first = GANTrainer(small(), data=mnist_small, out_dir=tmp_path).fit(steps=3, progress=False)
    path = first.save_checkpoint()
    assert load_checkpoint(path)["device"] == "cpu"
    as_if_trained_on_cuda(path)

    runs = []
    for i in range(2):
        logs = []
        runs.append(GANTrainer.from_checkpoint(path, data=mnist_small, out_dir=tmp_path / str(i),
                                               log=logs.append).fit(steps=5, progress=False))
        assert logs[0] == (f"note: {path} was trained on cuda and continues on cpu: its noise is "
                           "drawn afresh from step 3 on, so the run will not repeat, number for "
                           "number, one that stayed on cuda.")
    assert runs[0].step == 5 and all(map(math.isfinite, runs[0].history["g_loss"]))
    for a, b in zip(params(runs[0]), params(runs[1])):  # the fresh noise is the seed's
        assert torch.equal(a, b)
    assert load_checkpoint(tmp_path / "0")["device"] == "cpu"  # saved from the CPU at the end


def test_checkpoints_load_with_weights_only(tmp_path, mnist_small, monkeypatch):
    GANTrainer(small(), data=mnist_small, out_dir=tmp_path).fit(steps=1, progress=False)
    seen = {}
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(tmp_path / "checkpoint.pt")
    assert seen.get("weights_only") is True


def test_interrupted_write_keeps_previous_checkpoint(tmp_path, mnist_small, monkeypatch):
    t = GANTrainer(small(), data=mnist_small, out_dir=tmp_path).fit(steps=2, progress=False)
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="No space"):
        t.save_checkpoint()
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def _names(folder):
    return sorted(p.name for p in folder.iterdir() if p.is_file())


def test_an_unwritable_output_folder_stops_before_training(tmp_path, mnist_small):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    t = GANTrainer(small(), data=mnist_small, out_dir=blocker / "run", log=lambda _: None)
    with pytest.raises(OSError, match="cannot write to the output folder .*a-file/run"):
        t.fit(steps=5, progress=False)
    assert t.step == 0  # no training was spent before the error
    t = GANTrainer(small(), data=mnist_small, out_dir=blocker, log=lambda _: None)
    with pytest.raises(OSError, match=r"output folder .*a-file \(it is a file, not a folder\)"):
        t.fit(steps=5, progress=False)


def test_a_new_run_moves_the_run_before_it_aside(tmp_path, mnist_small):
    # Running the same command or notebook twice must not cost the first run's training.
    said = []

    def run(steps):
        t = GANTrainer(small(sample_interval=1), data=mnist_small, out_dir=tmp_path, log=said.append)
        return t.fit(steps=steps, progress=False)

    run(3)
    first = (tmp_path / "checkpoint.pt").read_bytes()
    run(2)
    previous = tmp_path / "previous"
    assert (previous / "checkpoint.pt").read_bytes() == first
    assert _names(previous) == ["checkpoint.pt", "early_vs_late.png", "step_0000001.png",
                                "step_0000002.png", "step_0000003.png", "training.gif"]
    # The folder now holds the new run alone: no grid of the old one mixed in.
    assert _names(tmp_path) == ["checkpoint.pt", "early_vs_late.png", "step_0000001.png",
                                "step_0000002.png", "training.gif"]
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2
    assert said[-1].startswith(f"{tmp_path} held another run's files; moved them to {previous}")
    resumed = GANTrainer.from_checkpoint(previous / "checkpoint.pt", data=mnist_small)
    assert resumed.step == 3 and resumed.out_dir == previous

    run(1)  # one earlier run is kept: the next new run replaces it
    assert _names(previous) == ["checkpoint.pt", "early_vs_late.png", "step_0000001.png",
                                "step_0000002.png", "training.gif"]
    assert load_checkpoint(previous / "checkpoint.pt")["step"] == 2


def test_continuing_a_run_leaves_its_folder_alone(tmp_path, mnist_small):
    GANTrainer(small(sample_interval=2), data=mnist_small, out_dir=tmp_path).fit(steps=2, progress=False)
    t = GANTrainer.from_checkpoint(tmp_path / "checkpoint.pt", data=mnist_small)
    t.fit(steps=4, progress=False)
    assert not (tmp_path / "previous").exists()
    assert _names(tmp_path) == ["checkpoint.pt", "early_vs_late.png", "step_0000002.png",
                                "step_0000004.png", "training.gif"]


def test_resuming_a_run_kept_in_previous_says_where_it_lives(tmp_path, mnist_small):
    said = []
    for steps in (3, 2):  # the second run moves the first into previous/
        GANTrainer(small(), data=mnist_small, out_dir=tmp_path, log=said.append).fit(steps=steps, progress=False)
    said.clear()
    kept = tmp_path / "previous" / "checkpoint.pt"
    resumed = GANTrainer.from_checkpoint(kept, data=mnist_small, log=said.append)
    resumed.fit(steps=5, progress=False)
    assert any("next new run in" in line and "--out" in line for line in said), said
    said.clear()
    GANTrainer.from_checkpoint(tmp_path / "checkpoint.pt", data=mnist_small, log=said.append).fit(
        steps=4, progress=False)
    assert not any("next new run in" in line for line in said)


def test_a_moved_run_folder_resumes_and_finds_its_grids(tmp_path, mnist_small):
    GANTrainer(small(sample_interval=2), data=mnist_small, out_dir=tmp_path / "a").fit(steps=2, progress=False)
    (tmp_path / "a").rename(tmp_path / "kept")
    t = GANTrainer.from_checkpoint(tmp_path / "kept" / "checkpoint.pt", data=mnist_small)
    t.fit(steps=4, progress=False)  # before: FileNotFoundError for a/step_0000002.png, after training
    assert t.saved_grids == [tmp_path / "kept" / "step_0000002.png", tmp_path / "kept" / "step_0000004.png"]
    assert load_checkpoint(tmp_path / "kept" / "checkpoint.pt")["step"] == 4
    assert (tmp_path / "kept" / "early_vs_late.png").exists()


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


def test_checkpoint_from_another_architecture(tmp_path, mnist_small):
    GANTrainer(small("fc"), data=mnist_small, out_dir=tmp_path / "fc").fit(steps=1, progress=False)
    path = tmp_path / "fc" / "checkpoint.pt"
    with pytest.raises(CheckpointError, match="holds a 'fc' generator, not 'dcgan'"):
        load_generator(path, model="dcgan")
    dcgan = GANTrainer(small("dcgan"), data=mnist_small)
    with pytest.raises(CheckpointError, match="model='fc'.*model='dcgan'"):
        dcgan.load_state_dict(load_checkpoint(path), str(path))
    wider_d = GANTrainer(small("dcgan", d_width=8), data=mnist_small)
    with pytest.raises(CheckpointError, match="d_width=4, but this trainer has d_width=8"):
        wider_d.load_state_dict(dcgan.state_dict(), "a checkpoint")
    # a file whose weights do not fit its own configuration
    state = load_checkpoint(path)
    state["generator"] = state["generator_ema"] = dcgan.generator.state_dict()
    torch.save(state, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match="another architecture"):
        load_generator(tmp_path / "mixed.pt")


class SomethingUnsafe:
    """A class torch.load(weights_only=True) refuses to rebuild."""


def test_bad_checkpoint_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt is not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a gan_helpers checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    # a file that would run code on load is refused, and the refusal does not pass on
    # torch's advice to load it with weights_only=False
    torch.save({"hook": SomethingUnsafe()}, tmp_path / "code.pt")
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(tmp_path / "code.pt")
    message = str(refused.value)
    assert "will not unpickle: Unsupported global" in message and "SomethingUnsafe" in message
    assert "False" not in message and "allowlist" not in message
    # a file cut short in the middle of a pickle names the cause
    (tmp_path / "cut.pt").write_bytes(pickle.dumps({"weights": list(range(100))}, protocol=2)[:20])
    with pytest.raises(CheckpointError, match=r"\(EOFError: the file ends too soon\)"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


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


def test_ema_warm_up_spans_a_ninth_of_the_run(mnist_small):
    """Early on the average's decay is (1 + t) / (10 + t), whatever the cap ``ema``:
    the course's 0.9999 and the old 0.999 give the same average until the warm-up
    reaches the cap; a cap below the warm-up's decay gives another one."""
    def average(ema):
        t = GANTrainer(small(ema=ema, sample_interval=1000), data=mnist_small)
        t.fit(steps=12, progress=False)
        return torch.cat([p.flatten() for p in t.ema_generator.parameters()])

    assert TrainConfig().ema == 0.9999
    assert torch.equal(average(0.9999), average(0.999))
    assert not torch.equal(average(0.9999), average(0.5))


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


def test_standing_statistics_without_batchnorm_changes_nothing():
    g, _ = build_models("fc", batchnorm=False)
    before = [p.clone() for p in g.state_dict().values()]
    assert standing_statistics(g) is g
    assert all(torch.equal(a, b) for a, b in zip(before, g.state_dict().values()))


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
    assert dcgan.opt_g.param_groups[0]["lr"] == pytest.approx(0.002)
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


def test_config_validation():
    with pytest.raises(ValueError, match="decay_steps must be 0 or more"):
        TrainConfig.for_recipe("course", decay_steps=-1)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        TrainConfig.for_recipe("course", lr=0)
    with pytest.raises(ValueError, match="lr must be a positive number, got inf"):
        TrainConfig.for_recipe("course", lr=float("inf"))  # it would train to NaN at once
    with pytest.raises(ValueError, match="unknown recipe"):
        TrainConfig.for_recipe("fast")
    with pytest.raises(ValueError, match="b1 must be in"):
        TrainConfig.for_recipe("course", b1=1.5)


def test_resolve_device_names_the_problem(monkeypatch, mnist_small):
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu': use cpu, cuda, cuda:N, mps or auto"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="the course trains on cpu, cuda or mps"):
        resolve_device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)  # a Mac's GPU
    assert resolve_device("auto") == torch.device("mps")
    with pytest.raises(ValueError, match="PyTorch sees no CUDA GPU here"):
        resolve_device("cuda")
    # The trainer checks before it builds anything, so the message is the same there.
    with pytest.raises(ValueError, match="PyTorch sees no CUDA GPU here"):
        GANTrainer(small("fc"), data=mnist_small, device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match=r"only 1 CUDA GPU\(s\), cuda:0 to cuda:0"):
        resolve_device("cuda:3")


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


def test_config_defaults_follow_the_recipe_and_the_model():
    # What the command line, for_recipe and a bare TrainConfig give must agree: a
    # student writing TrainConfig(model="dcgan") gets the DCGAN recipe, not FC's.
    dcgan = TrainConfig(model="dcgan")
    assert dcgan == TrainConfig.for_recipe("course", model="dcgan")
    assert (dcgan.batch_size, dcgan.augment, dcgan.augment_ramp) == (64, 0, 0)
    assert (TrainConfig().batch_size, TrainConfig().augment) == (128, 0)
    seed = TrainConfig(recipe="seed")
    assert seed == TrainConfig.for_recipe("seed")
    assert (seed.lr, seed.b1, seed.g_lr_factor, seed.ema, seed.g_batchnorm) == (0.0002, 0.5, 1.0, 0.0, False)
    assert TrainConfig(model="dcgan", batch_size=32, augment=1).batch_size == 32  # given values win
    assert TrainConfig(recipe="seed", ema=0.999).ema == 0.999
    saved = asdict(TrainConfig(model="dcgan", lr=0.001))
    assert TrainConfig.from_dict(saved) == TrainConfig(model="dcgan", lr=0.001)
    # The course DCGAN recipe halves D's width; elsewhere D is as wide as G.
    assert (dcgan.width, dcgan.d_width) == (32, 16)
    assert TrainConfig(model="dcgan", width=64).d_width == 32
    assert TrainConfig(model="dcgan", recipe="seed").d_width == 32
    assert TrainConfig(model="dcgan", d_width=24).d_width == 24
    del saved["d_width"]  # a checkpoint from before d_width: its D was as wide as G
    assert TrainConfig.from_dict(saved).d_width == 32
    with pytest.raises(ValueError, match="unknown recipe 'fast': choose one of course, seed"):
        TrainConfig(recipe="fast")


def test_config_types_are_checked(tmp_path, mnist_small):
    with pytest.raises(ValueError, match=r"batch_size must be a whole number \(int\), got 64.0 \(float\); e.g. batch_size=64"):
        TrainConfig.for_recipe("course", batch_size=64.0)
    with pytest.raises(ValueError, match=r"lr must be a number, got '0.001' \(str\)"):
        TrainConfig.for_recipe("course", lr="0.001")
    with pytest.raises(ValueError, match=r"width must be a whole number \(int\), got 32.5"):
        TrainConfig.for_recipe("course", model="dcgan", width=32.5)
    # numpy's numbers (a batch size computed with numpy, say) become plain ones, which
    # the checkpoint needs: torch.load(weights_only=True) refuses numpy scalars
    config = small(batch_size=np.int64(32), lr=np.float64(0.001))
    assert type(config.batch_size) is int and type(config.lr) is float
    GANTrainer(config, data=mnist_small, out_dir=tmp_path).fit(steps=1, progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["config"]["batch_size"] == 32


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


# ---- Resume from every kind of stop, compared with a run that never stopped ----

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


def test_a_write_killed_midway_leaves_no_temporary_file_behind(tmp_path, mnist_small):
    t = GANTrainer(small(), data=mnist_small, out_dir=tmp_path).fit(steps=2, progress=False)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    orphan = tmp_path / f".checkpoint.pt.{dead}.tmp"  # what SIGKILL mid-write leaves
    orphan.write_bytes(b"half a checkpoint")
    t.save_checkpoint()
    assert not orphan.exists() and load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2
