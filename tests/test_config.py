"""gan_helpers.config: the recipes, TrainConfig's checks, device names."""

from dataclasses import asdict

import numpy as np
import pytest
import torch

from gan_helpers.config import TrainConfig, resolve_device
from gan_helpers.trainer import GANTrainer
from gan_helpers.checkpoints import load_checkpoint
from training_helpers import small


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
    with pytest.raises(ValueError, match=r"ema_rampup must be in \(0, 0.5\], got 0.0"):
        TrainConfig.for_recipe("course", ema_rampup=0.0)  # it would divide by zero
    # Checkpoints written before the option existed ramped up over a tenth.
    legacy = {k: v for k, v in vars(TrainConfig(ema_rampup=0.3)).items() if k != "ema_rampup"}
    assert TrainConfig.from_dict(legacy).ema_rampup == 0.1


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
