"""gan_helpers.checkpoints: the format, atomic writes, safe loads, run folders, generate."""

import math
import pickle
import subprocess
import sys

import pytest
import torch
from torch import nn

from gan_helpers.models import build_models
from gan_helpers.trainer import GANTrainer
from gan_helpers.checkpoints import CheckpointError, generate, load_checkpoint, load_generator
from training_helpers import params, small


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


def test_a_write_killed_midway_leaves_no_temporary_file_behind(tmp_path, mnist_small):
    t = GANTrainer(small(), data=mnist_small, out_dir=tmp_path).fit(steps=2, progress=False)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    orphan = tmp_path / f".checkpoint.pt.{dead}.tmp"  # what SIGKILL mid-write leaves
    orphan.write_bytes(b"half a checkpoint")
    t.save_checkpoint()
    assert not orphan.exists() and load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2
