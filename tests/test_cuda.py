"""The CUDA path: training, resuming, sampling and scoring with a GPU, and moving a run
between a GPU and a CPU. Skipped where PyTorch sees no CUDA GPU (as in CI); run them on
a machine with one: ``pytest tests/test_cuda.py``."""
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_helpers.cli import main
from gan_helpers.metrics import class_scores, score_generator
from gan_helpers.models import FCGenerator
from gan_helpers.config import R1_EVERY, TrainConfig
from gan_helpers.trainer import GANTrainer
from gan_helpers.checkpoints import generate, load_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def small(model="fc", **kw):
    kw.setdefault("batch_size", 64)
    if model == "dcgan":
        kw.setdefault("width", 8)
    return TrainConfig.for_recipe(kw.pop("recipe", "course"), model=model, **kw)


def on_gpu(trainer: GANTrainer) -> bool:
    nets = (trainer.generator, trainer.discriminator)
    return all(p.is_cuda for net in nets for p in net.parameters())


@pytest.mark.parametrize("model,recipe,extras", [
    ("fc", "course", {}),
    ("dcgan", "course", {}),
    ("fc", "seed", {}),  # the seed's DataLoader builds batches on the CPU
    # the weight average, D's augmentation, R1 and lr decay, each drawing or moving tensors
    ("dcgan", "course", {"ema": 0.99, "augment_ramp": 4, "r1": 0.05, "decay_steps": 100}),
])
def test_each_recipe_trains_on_the_gpu(tmp_path, mnist_small, model, recipe, extras):
    trainer = GANTrainer(small(model, recipe=recipe, **extras), data=mnist_small,
                         out_dir=tmp_path, device="cuda")
    trainer.fit(steps=R1_EVERY, progress=False)

    assert on_gpu(trainer) and trainer.step == R1_EVERY
    assert all(len(v) == R1_EVERY and all(map(math.isfinite, v)) for v in trainer.history.values())
    samples = trainer.fixed_samples()
    assert samples.device.type == "cpu" and samples.shape == (64, 1, 28, 28)
    assert samples.abs().max() <= 1 and samples.std() > 0
    assert trainer.save_grid().exists() and (tmp_path / "checkpoint.pt").exists()


def test_gpu_resume_matches_an_unbroken_gpu_run(tmp_path, mnist_small):
    cfg = small("fc", batch_size=48)
    straight = GANTrainer(cfg, data=mnist_small, device="cuda").fit(steps=14, progress=False)
    first = GANTrainer(cfg, data=mnist_small, out_dir=tmp_path, device="cuda")
    path = first.fit(steps=6, progress=False).save_checkpoint()
    resumed = GANTrainer.from_checkpoint(path, data=mnist_small, device="cuda")
    resumed.fit(steps=14, progress=False)

    assert load_checkpoint(path)["device"] == "cuda"
    for net in ("generator", "discriminator"):
        for a, b in zip(getattr(straight, net).parameters(), getattr(resumed, net).parameters()):
            assert torch.equal(a, b)
    assert straight.history == resumed.history


def test_a_gpu_run_continues_on_the_cpu_and_back(tmp_path, mnist_small):
    logs = []
    gpu = GANTrainer(small("dcgan"), data=mnist_small, out_dir=tmp_path, device="cuda")
    path = gpu.fit(steps=3, progress=False).save_checkpoint()

    cpu = GANTrainer.from_checkpoint(path, data=mnist_small, log=logs.append)  # device cpu
    for a, b in zip(gpu.generator.parameters(), cpu.generator.parameters()):
        assert not b.is_cuda and torch.equal(a.cpu(), b)
    cpu.fit(steps=5, progress=False)
    assert cpu.step == 5 and all(map(math.isfinite, cpu.history["g_loss"]))
    assert any("was trained on cuda and continues on cpu" in line for line in logs)

    back = GANTrainer.from_checkpoint(cpu.save_checkpoint(), data=mnist_small,
                                      device="cuda", log=logs.append)
    back.fit(steps=7, progress=False)
    assert on_gpu(back) and back.step == 7
    assert any("was trained on cpu and continues on cuda" in line for line in logs)


def test_a_gpu_generator_samples_and_scores_to_cpu_tensors():
    torch.manual_seed(0)
    g = FCGenerator()
    on_cpu = generate(g, 20, seed=1)
    g.cuda()
    on_cuda = generate(g, 20, seed=1)  # the generator's own device, the same noise
    assert on_cuda.device.type == "cpu" and on_cuda.shape == (20, 1, 28, 28)
    torch.testing.assert_close(on_cuda, on_cpu, atol=1e-4, rtol=0)
    scores = class_scores(g(torch.randn(50, 100, device="cuda")))  # images still on the GPU
    assert len(scores["class_histogram"]) == 10
    assert score_generator(g, n=300)["n"] == 300


def test_a_gpu_generator_drives_the_latent_explorer():
    pytest.importorskip("ipywidgets")
    from gan_helpers.live import latent_explorer

    torch.manual_seed(0)
    box = latent_explorer(FCGenerator().cuda(), n_sliders=2)
    image, controls = box.children
    first = image.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    controls.children[0].value = 3.0  # moving a slider redraws from the GPU
    assert image.value[:8] == b"\x89PNG\r\n\x1a\n" and image.value != first


def test_the_live_dashboard_follows_a_gpu_run(mnist_small, capsys):
    pytest.importorskip("ipywidgets")
    from gan_helpers.live import LiveDashboard

    trainer = GANTrainer(small("fc", sample_interval=1000), data=mnist_small, device="cuda",
                         log=lambda _: None)
    dash = LiveDashboard("run")
    trainer.fit(steps=3, hooks=[dash], progress=False)  # pytest runs no kernel: text lines
    assert "run: step 3" in capsys.readouterr().out
    assert "digits among 256 samples" in dash._class_report(trainer)  # samples drawn on the GPU


def test_cli_trains_on_the_gpu_samples_on_the_cpu_and_resumes_on_either(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--device", "cuda", "--max-steps", "4", "--batch-size", "32",
                 "--out", str(out), "--quiet"]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["device"] == "cuda"
    assert main(["sample", "--checkpoint", str(out), "--n", "5", "--out", str(tmp_path / "s.npy")]) == 0
    images = np.load(tmp_path / "s.npy")
    assert images.shape == (5, 28, 28) and images.min() >= -1 and images.max() <= 1
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--max-steps", "6", "--quiet"]) == 0
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 6 and state["device"] == "cuda"  # a GPU run stays on the GPU
    assert "continues on" not in capsys.readouterr().out
    assert main(["train", "--resume", str(out), "--max-steps", "8", "--device", "cpu", "--quiet"]) == 0
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 8 and state["device"] == "cpu"
    assert "was trained on cuda and continues on cpu" in capsys.readouterr().out


def test_the_exercise_checks_take_models_on_the_gpu():
    from torch import nn

    from gan_helpers import checks
    from gan_helpers.models import DCGANDiscriminator, DCGANGenerator, FCDiscriminator

    class MovesItself(FCDiscriminator):  # a student's class that moves itself in __init__
        def __init__(self, logits=False):
            super().__init__(logits=logits)
            self.cuda()

    for check, model in [(checks.check_generator, FCGenerator().cuda()),
                         (checks.check_discriminator, MovesItself),
                         (checks.check_dcgan_generator, DCGANGenerator().cuda()),
                         (checks.check_dcgan_discriminator, DCGANDiscriminator().cuda())]:
        result = check(model)
        assert result.passed, str(result)
    assert isinstance(model, nn.Module) and next(model.parameters()).is_cuda  # the student's own stays


def test_speed_bench_profiles_the_gpu_share_of_a_step():
    bench = Path(__file__).resolve().parents[1] / "bench" / "speed.py"
    done = subprocess.run([sys.executable, str(bench), "--device", "cuda", "--profile",
                           "--seconds", "0.5", "--rounds", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    pattern = (r"course (FC GAN|DCGAN) on cuda(?::\d+)?: the GPU computes (\d+\.\d+) ms of each "
               r"(\d+\.\d+)-ms step \((\d+)%\), in (\d+) kernel launches \(torch.profiler, 100 steps\)")
    found = [re.fullmatch(pattern, line) for line in done.stdout.strip().splitlines()[-2:]]
    assert all(found), done.stdout[-2000:]
    assert [m[1] for m in found] == ["FC GAN", "DCGAN"]
    for m in found:
        assert 0 < float(m[2]) and 0 < float(m[3]) and int(m[5]) >= 20  # a G and a D step
