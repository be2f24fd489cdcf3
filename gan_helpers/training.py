"""The seed's training loop, made fast, reproducible, resumable and observable.

``train_step`` is one step exactly as the seed's gan.py takes it: the generator first
(its own ``zero_grad``, loss against the valid label, backward, step), then the
discriminator on the real batch and on the *detached* fake batch (its own
``zero_grad``, (real + fake) / 2, backward, step).

``GANTrainer`` runs that step over batches until a number of epochs, steps or seconds,
calls hooks (the live dashboard, grid saving), writes sample grids and checkpoints, and
resumes from a checkpoint bit for bit on the CPU.
"""

from __future__ import annotations

import copy
import math
import numbers
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from .augment import translate
from .data import ImageSet, SeedLoaderBatches, ShuffledBatches, load_images
from .losses import adversarial_loss, discriminator_loss, generator_loss, r1_penalty, uses_logits
from .models import LATENT_DIM, MODEL_TITLES, build_models, device_of, noise_size

RECIPES = ("course", "seed")
CHECKPOINT_FORMAT = "gan-course-checkpoint"
CHECKPOINT_VERSION = 1
EARLIER_RUN_DIR = "previous"  # where a new run moves the files of the run before it
SEED_EPOCHS = 300  # the seed's run length (its gan.py defaults to 200)
# The training choices that differ between recipes and models. A TrainConfig field left
# at None takes its value from here (see TrainConfig.for_recipe for why each is so).
COURSE_FC = {"batch_size": 128, "lr": 0.0005, "g_lr_factor": 2.0, "b1": 0.0, "b2": 0.999,
             "g_batchnorm": True, "ema": 0.9999, "augment": 0, "augment_ramp": 0,
             "r1": 0.0}
COURSE_DCGAN = {**COURSE_FC, "batch_size": 64, "lr": 0.001, "r1": 0.5}
SEED_RECIPE = {"batch_size": 64, "lr": 0.0002, "g_lr_factor": 1.0, "b1": 0.5, "b2": 0.999,
               "g_batchnorm": False, "ema": 0.0, "augment": 0, "augment_ramp": 0, "r1": 0.0}
# Lazy regularisation (Karras et al. 2020, StyleGAN2): the R1 penalty every 16 steps,
# weighted 16 times, costs a sixteenth of the work for about the same effect.
R1_EVERY = 16


@dataclass
class TrainConfig:
    """Everything that defines a run; saved in every checkpoint.

    The seed's options keep the seed's names (batch_size, lr, b1, b2, latent_dim,
    sample_interval). ``recipe`` and ``model`` pick the defaults of the training
    choices: ``TrainConfig()`` is the course FC recipe, ``TrainConfig(model="dcgan")``
    the course DCGAN recipe and ``TrainConfig(recipe="seed")`` gan.py's; a value given
    explicitly always wins (``for_recipe`` says why each default is what it is). The
    fields shown as ``None`` below hold those recipe values once the config exists.
    ``recipe`` also picks the data path: "course" keeps the data set in memory and draws
    batches by index, "seed" uses the seed's DataLoader + transforms.
    """

    model: str = "fc"
    dataset: str = "mnist"
    recipe: str = "course"
    batch_size: int | None = None
    lr: float | None = None
    g_lr_factor: float | None = None
    b1: float | None = None
    b2: float | None = None
    latent_dim: int = LATENT_DIM
    loss: str = "bce"
    g_batchnorm: bool | None = None
    width: int = 32
    d_width: int | None = None
    ema: float | None = None
    augment: int | None = None
    augment_ramp: int | None = None
    decay_start: int = 0
    decay_steps: int = 0
    label_smoothing: float = 0.0
    r1: float | None = None
    seed: int = 0
    sample_interval: int = 400
    n_samples: int = 64

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}: choose one of {', '.join(RECIPES)}")
        if self.recipe == "seed":
            defaults = SEED_RECIPE
        else:
            defaults = COURSE_DCGAN if self.model == "dcgan" else COURSE_FC
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self._check_types()
        if self.d_width is None:
            # The course DCGAN recipe halves D's width (for_recipe says why); elsewhere D
            # is as wide as G, as in the DCGAN paper.
            halve = self.recipe == "course" and self.model == "dcgan"
            self.d_width = max(1, self.width // 2) if halve else self.width

    @classmethod
    def for_recipe(cls, recipe: str = "course", **overrides) -> "TrainConfig":
        """The defaults of ``recipe`` ("course" or "seed"), with ``overrides`` applied:
        ``TrainConfig(recipe=recipe, **overrides)``, checked by ``validate``.

        "seed" is gan.py as written: batch 64, lr 0.0002, betas (0.5, 0.999), BCE on
        a sigmoid, no BatchNorm in the FC generator, DataLoader with transforms.
        "course" keeps the seed's networks, loss and step and changes training
        choices, picked from short CPU runs (bench/RESULTS.md): BatchNorm in G's
        hidden layers; batch 128; lr 0.0005 for D and twice that for G (``g_lr_factor``
        2: G moves faster, and the weight average below smooths its path); Adam's beta1
        0 instead of 0.5 (as StyleGAN and BigGAN train: little use for momentum in a
        game whose other side keeps moving); and it samples from an exponential moving
        average of G's weights,
        which smooths out the step-to-step wobble of the adversarial game: after a
        warm-up it spans about the last ninth of the run, up to ``1 / (1 - ema)`` =
        10,000 steps (``ema`` 0.9999; a cap of 1,000 steps, 0.999, drew digits a little
        less legible and farther from real ones at 11,400 and 16,000 steps;
        bench/RESULTS.md), with BatchNorm statistics recomputed for the averaged weights
        (``standing_statistics``). For DCGAN the course uses batch 64, lr 0.001 for D
        (the DCGAN paper's 0.0002 learns too slowly for a few CPU minutes; 0.001, twice
        the FC recipe's, did worse than 0.0005 before the R1 penalty below and better
        with it) and, as for FC, twice that for G with beta1 0 (the paper: 0.5), width
        32 for G (2.6 times the
        steps of pytorch/examples' 64 in the same CPU time) and half that for
        D, ``d_width`` 16: D runs three times a step (G's step, then real and fake
        apart, for BatchNorm) and costs most of it, so a half-width D takes 1.5 times
        the steps in the same time, and it came closer to real digits per step too
        (a quarter, 8, was too weak; bench/RESULTS.md). That holds for runs of minutes:
        over an hour a half-width D stalls, so for long runs give ``d_width=width``.
        The course DCGAN recipe also adds the R1 penalty, ``r1`` 0.5 (below): in 300-s
        runs it brought DCGAN's Fréchet distance from about 22 to about 9, level with
        the FC GAN's (0.05 gave about 11, 1 about 11), and over an hour, with D as wide
        as G, it drew more legible digits than 0.05 did (bench/RESULTS.md, "Longer
        runs"). With R1 in place, doubling the lr from 0.0005 to 0.001 brought the
        mean distance at 300 s to about 7.8, against the FC GAN's 8.4, lower in 9 seeds
        of 12 (README, "DCGAN against FC at 300 s"; 0.002 gave about 8.1,
        bench/RESULTS.md).

        ``decay_steps`` > 0 lets both learning rates fall linearly from their values at
        step ``decay_start`` to 0 at step ``decay_start + decay_steps`` (CycleGAN's
        schedule, for long runs); 0, the default of both recipes, keeps them constant,
        as the seed does.

        ``label_smoothing`` > 0 trains D to call real images real with target
        ``1 - label_smoothing`` instead of 1 (one-sided label smoothing; G's valid label
        stays 1; ``gan_helpers.losses``). 0, the default of both recipes, is the seed's.

        ``augment`` > 0 (0 in both recipes) shows D every image, real and fake, moved by
        up to that many pixels (``gan_helpers.augment``, DiffAugment's translation),
        widening from 1 pixel every ``augment_ramp`` steps. It helped when the course
        trained on 10,000 digits, which D could learn by heart; on the 60,000 training
        digits it cost distance and legibility (bench/RESULTS.md).

        ``r1`` > 0 (course DCGAN: 0.5; elsewhere 0, the seed's) adds the R1 penalty
        (``losses.r1_penalty``) with that weight: every ``R1_EVERY`` (16) steps, after
        the seed's step, one more Adam step of D on ``r1 / 2 * 16 *`` the squared
        gradient of D's logit at the step's real images. It keeps D from sharpening its
        boundary around the training digits, which is what lets the game settle
        (Mescheder et al. 2018).
        """
        config = cls(recipe=recipe, **overrides)
        config.validate()
        return config

    def _check_types(self) -> None:
        """Refuse a value of the wrong type (64.0 or "64" for batch_size, say) with a
        ValueError that names the field, before it fails somewhere deep in torch; take
        any integer or real number (numpy's too) as a plain int or float, so that the
        configuration saves into a checkpoint that loads with ``weights_only=True``."""
        wanted = {"int": "a whole number (int)", "float": "a number", "str": "a string",
                  "bool": "True or False"}
        for field in fields(self):
            value = getattr(self, field.name)
            kind = str(field.type).split(" |")[0]  # "int | None": None is filled in above
            if value is None:
                continue
            is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if kind == "int" and is_number and isinstance(value, numbers.Integral):
                setattr(self, field.name, int(value))
            elif kind == "float" and is_number:
                setattr(self, field.name, float(value))
            elif kind in ("int", "float") or not isinstance(value, {"str": str, "bool": bool}[kind]):
                example = (f"; e.g. {field.name}={int(value)}" if kind == "int"
                           and isinstance(value, float) and value.is_integer() else "")
                raise ValueError(f"{field.name} must be {wanted[kind]}, got {value!r} "
                                 f"({type(value).__name__}){example}")

    def validate(self) -> None:
        """Raise ValueError naming any option with an impossible value."""
        build_models(self.model, self.latent_dim, uses_logits(self.loss))  # names
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}: choose one of {', '.join(RECIPES)}")
        for name in ("batch_size", "latent_dim", "sample_interval", "n_samples", "width", "d_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0 <= self.augment <= 7:
            raise ValueError(
                f"augment is the largest shift in pixels, 0 (off) to 7, got {self.augment}"
            )
        for name in ("augment_ramp", "decay_start", "decay_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(
                f"label_smoothing must be in [0, 0.5) (0 turns it off; 0.1 makes D's real "
                f"target 0.9), got {self.label_smoothing}"
            )
        if not 0.0 <= self.r1 < math.inf:
            raise ValueError(f"r1 must be 0 (off) or a positive weight such as 0.05, got {self.r1}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1) (0 turns it off), got {self.ema}")
        for name in ("lr", "g_lr_factor"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)}")
        for name in ("b1", "b2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def augment_shift(self, step: int) -> int:
        """The largest shift, in pixels, of the images D sees at ``step``: ``augment``,
        or with ``augment_ramp`` > 0, 1 pixel for the first ``augment_ramp`` steps, 2 for
        the next ``augment_ramp``, and so on up to ``augment``."""
        if not self.augment_ramp:
            return self.augment
        return min(self.augment, 1 + step // self.augment_ramp)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        # Checkpoints from before ``augment``, ``augment_ramp`` and ``g_lr_factor``
        # existed trained without augmentation, then with the full shift from step 0,
        # and with one lr for both networks.
        # The same for ``r1``: checkpoints from before it trained without the penalty.
        values = {"augment": 0, "augment_ramp": 0, "g_lr_factor": 1.0, "r1": 0.0, **values}
        # Before ``d_width``, a DCGAN's discriminator was as wide as its generator.
        values.setdefault("d_width", values.get("width", cls.width))
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class StepStats:
    """What one training step measured (all 0-dim float tensors, detached).

    g_loss, d_loss: the two losses (>= 0; log 2 ~ 0.693 at equilibrium).
    d_real: mean D(x) on the real batch, a probability in [0, 1].
    d_fake: mean D(G(z)) on the fake batch in the D step, in [0, 1]; 0.5 at equilibrium.
    """

    g_loss: torch.Tensor
    d_loss: torch.Tensor
    d_real: torch.Tensor
    d_fake: torch.Tensor


def train_step(
    generator: nn.Module,
    discriminator: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    criterion: nn.Module,
    real: torch.Tensor,
    z: torch.Tensor,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    real_label: float = 1.0,
) -> StepStats:
    """One step of the seed's loop: train G, then D, never both at once.

    real: (B, 1, 28, 28) in [-1, 1]; z: (B, latent_dim) ~ N(0, 1), one vector per real
    image. ``augment``, if given, maps a batch of images to a transformed batch of the
    same shape; D then sees only transformed images, real and fake, in both steps
    (``gan_helpers.augment``). ``real_label`` is D's target for real images (1, or
    less for one-sided label smoothing). Returns the step's losses and mean D outputs
    as probabilities.
    """
    seen_by_d = augment if augment is not None else _unchanged
    # ---- Generator: make D call the fakes valid (label 1). ----
    opt_g.zero_grad(set_to_none=True)
    fake = generator(z)
    # D's weights need no gradient here (the seed computes one and its D zero_grad
    # throws it away); freezing them skips that work. Gradients still flow through D
    # to G, and D's weights are untouched by this step either way.
    discriminator.requires_grad_(False)
    try:
        g_loss = generator_loss(criterion, discriminator(seen_by_d(fake)))
        g_loss.backward()
    finally:
        discriminator.requires_grad_(True)
    opt_g.step()

    # ---- Discriminator: real -> 1, fake -> 0. detach() stops D's loss reaching G. ----
    opt_d.zero_grad(set_to_none=True)
    if _mixes_batch(discriminator):
        # BatchNorm normalises over the batch, so real and fake must pass separately.
        d_on_real = discriminator(seen_by_d(real))
        d_on_fake = discriminator(seen_by_d(fake.detach()))
    else:
        # Without BatchNorm one pass over both halves is the same maths as two passes
        # (each image is scored alone) and runs as larger, faster matrix products.
        both = seen_by_d(torch.cat([real, fake.detach()]))
        d_on_real, d_on_fake = discriminator(both).split([real.shape[0], fake.shape[0]])
    d_loss = discriminator_loss(criterion, d_on_real, d_on_fake, real_label)
    d_loss.backward()
    opt_d.step()

    with torch.no_grad():
        as_prob = torch.sigmoid if isinstance(criterion, nn.BCEWithLogitsLoss) else (lambda t: t)
        return StepStats(
            g_loss.detach(), d_loss.detach(),
            as_prob(d_on_real).mean(), as_prob(d_on_fake).mean(),
        )


def r1_step(
    discriminator: nn.Module, opt_d: torch.optim.Optimizer, real: torch.Tensor,
    gamma: float, every: int = R1_EVERY,
) -> torch.Tensor:
    """One extra update of D on the R1 penalty alone (``losses.r1_penalty``), weighted
    ``gamma / 2``, for a run that applies it every ``every`` steps: the weight is
    multiplied by ``every`` so that it counts as much as a penalty in every step (lazy
    regularisation, as in StyleGAN2). real: (B, 1, 28, 28) in [-1, 1], the step's real
    batch. Returns the penalty before weighting (detached, >= 0)."""
    opt_d.zero_grad(set_to_none=True)
    penalty = r1_penalty(discriminator, real)
    (gamma / 2 * penalty * every).backward()
    opt_d.step()
    return penalty.detach()


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """The torch.device to train on, checked before any tensor moves: ``"cpu"``,
    ``"cuda"`` / ``"cuda:N"``, ``"mps"``, or ``"auto"`` (the CUDA GPU where PyTorch sees
    one, else Apple's MPS where there is one, else the CPU). Raises ValueError naming the problem and the fix for a name
    PyTorch does not know, a kind this course does not train on, or a GPU that is not
    there (instead of PyTorch's error from deep inside the first ``.to``)."""
    if isinstance(device, str) and device.strip().lower() == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"unknown device {device!r}: use cpu, cuda, cuda:N, mps or auto"
        ) from err
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"device {device!r}: PyTorch sees no CUDA GPU here (torch.cuda.is_available() "
                "is False: no GPU, no driver, or a CPU-only build). Use cpu, or auto to take "
                "the GPU only where there is one."
            )
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"device {device!r}: there are only {count} CUDA GPU(s), cuda:0 to "
                f"cuda:{count - 1}"
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(
                f"device {device!r}: Apple's MPS backend is not available here. Use cpu or auto."
            )
    elif dev.type != "cpu":
        raise ValueError(f"device {device!r}: the course trains on cpu, cuda or mps")
    return dev


def make_optimizer(
    module: nn.Module, config: TrainConfig, lr: float | None = None
) -> torch.optim.Adam:
    """Adam with the config's betas and ``lr`` (default ``config.lr``). The course recipe
    uses the fused kernel (one pass over all parameters instead of a loop of small ops);
    same update rule."""
    return torch.optim.Adam(
        module.parameters(), lr=config.lr if lr is None else lr, betas=(config.b1, config.b2),
        fused=config.recipe == "course" or None,
    )


def train_briefly(
    generator: nn.Module,
    discriminator: nn.Module,
    steps: int,
    step: Callable = train_step,
    data: ImageSet | None = None,
    seed: int = 0,
) -> object:
    """Train a pair of networks for ``steps`` steps the seed's way: a quick look at
    networks or a training step written elsewhere (the assignments' "Try it" cells).

    Each network gets Adam with the seed's lr 0.0002 and betas (0.5, 0.999); the loss
    is BCE on a sigmoid. Each step is one call ``step(generator, discriminator, opt_g,
    opt_d, criterion, real, z)``, as ``train_step`` takes them, with a shuffled batch of
    64 real images (64, 1, 28, 28) in [-1, 1] from ``data`` (default ``load_images()``),
    epoch after epoch, and noise z (64, latent_dim) ~ N(0, 1) drawn from ``seed``.
    Returns what the last call returned.
    """
    config = TrainConfig.for_recipe("seed", seed=seed)
    opt_g, opt_d = make_optimizer(generator, config), make_optimizer(discriminator, config)
    criterion = adversarial_loss(config.loss)
    images = (data if data is not None else load_images()).scaled()
    batches = ShuffledBatches(images, config.batch_size, seed=seed)
    noise = torch.Generator().manual_seed(seed)
    latent_dim = noise_size(generator)
    result, done = None, 0
    for epoch in range(math.ceil(steps / batches.steps_per_epoch)):
        for real in batches.epoch(epoch):
            if done == steps:
                break
            z = torch.randn(len(real), latent_dim, generator=noise)
            result = step(generator, discriminator, opt_g, opt_d, criterion, real, z)
            done += 1
    return result


@torch.no_grad()
def standing_statistics(
    generator: nn.Module, n: int = 2048, batch_size: int = 256, seed: int = 0
) -> nn.Module:
    """Recompute the BatchNorm running statistics of ``generator``, in place, from its
    own activations on ``n`` noise vectors z ~ N(0, 1), fed in batches of shape
    (batch_size, latent_dim); returns ``generator`` (its train/eval mode unchanged).

    BigGAN's "standing statistics" (Brock et al. 2019). A weight average of G has
    weights that no G ever had, so the running means and variances G gathered for its
    own, moving weights do not fit it: in eval mode its layers would be normalised with
    the wrong numbers. This passes noise through the generator in train mode and keeps,
    for each BatchNorm layer, the average of the batches' means and variances (PyTorch's
    ``torch.optim.swa_utils.update_bn``, which SWA uses for the same reason). The same
    ``seed`` and weights give the same statistics. Without BatchNorm layers nothing
    changes.
    """
    from torch.optim.swa_utils import update_bn

    rng = torch.Generator().manual_seed(seed)
    device = device_of(generator)
    sizes = [min(batch_size, n - i) for i in range(0, n, batch_size)]
    update_bn(
        (torch.randn(size, noise_size(generator), generator=rng).to(device) for size in sizes),
        generator,
    )
    return generator


def _unchanged(images: torch.Tensor) -> torch.Tensor:
    return images


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _mixes_batch(module: nn.Module) -> bool:
    """Whether ``module``'s output for one image depends on the rest of its batch
    (BatchNorm, or a layer marked ``mixes_batch``, such as the toy GAN's MinibatchStd)."""
    return _has_batchnorm(module) or any(getattr(m, "mixes_batch", False) for m in module.modules())


@dataclass
class TrainEvent:
    """What a hook receives. ``samples()`` draws G(fixed noise) only when asked."""

    trainer: "GANTrainer"
    step: int
    epoch: float
    g_loss: float
    d_loss: float
    d_real: float
    d_fake: float
    final: bool = False

    def samples(self) -> torch.Tensor:
        """G's images for the trainer's fixed noise: (n_samples, 1, 28, 28) in [-1, 1]."""
        return self.trainer.fixed_samples()


Hook = Callable[[TrainEvent], None]


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the message says what to try."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged or of another architecture."""


HISTORY_KEYS = ("g_loss", "d_loss", "d_real", "d_fake")


class GANTrainer:
    """Trains a generator and a discriminator with the seed's step.

    data: an ImageSet (default: ``load_images(config.dataset)``).
    out_dir: where sample grids (``step_*.png``, ``early_vs_late.png``, ``training.gif``) and
    ``checkpoint.pt`` go; None writes nothing.
    checkpoint_every: seconds between periodic checkpoints (one is also written at the
    end and on Ctrl-C / kernel interrupt).
    """

    def __init__(
        self,
        config: TrainConfig | None = None,
        data: ImageSet | None = None,
        out_dir: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        checkpoint_every: float = 120.0,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = config = config or TrainConfig()
        config.validate()
        self.device = resolve_device(device)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.checkpoint_every = checkpoint_every
        self.log = log

        torch.manual_seed(config.seed)  # the initial weights
        self.generator, self.discriminator = (
            m.to(self.device)
            for m in build_models(
                config.model, config.latent_dim, uses_logits(config.loss),
                config.g_batchnorm, config.width, config.d_width,
            )
        )
        if self.device.type == "cpu" and config.model == "dcgan":
            # oneDNN's CPU convolutions run faster on channels-last tensors; same maths.
            for net in (self.generator, self.discriminator):
                net.to(memory_format=torch.channels_last)
        self.criterion = adversarial_loss(config.loss)
        # The generator to sample from: an exponential moving average of G's weights
        # (Karras et al. 2018; Yazici et al. 2019) or, with ema=0, G itself.
        self.ema_generator = (
            copy.deepcopy(self.generator).requires_grad_(False) if config.ema > 0 else None
        )
        self.opt_g = make_optimizer(self.generator, config, config.lr * config.g_lr_factor)
        self.opt_d = make_optimizer(self.discriminator, config)
        self.noise_rng = torch.Generator(self.device).manual_seed(config.seed + 1)
        self.augment_rng = torch.Generator(self.device).manual_seed(config.seed + 3)
        self.augment = self._augmentation(0)
        self.fixed_noise = torch.randn(
            config.n_samples, config.latent_dim,
            generator=torch.Generator().manual_seed(config.seed + 2),
        ).to(self.device)
        self.step = 0
        # The step at which the average's BatchNorm statistics were last computed.
        self._sampler_stats_step: int | None = None
        self.history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
        self.saved_grids: list[Path] = []
        self.interrupted = False
        # The checkpoint this trainer continues (set by from_checkpoint), and whether
        # out_dir has been cleared of another run's files (done once, at the first fit).
        self.resumed_from: Path | None = None
        self._out_dir_claimed = False

        self.data = data if data is not None else load_images(config.dataset)
        if config.recipe == "seed":
            self.batches = SeedLoaderBatches(
                self.data, config.batch_size, config.seed, self.device
            )
        else:
            self.batches = ShuffledBatches(
                self.data.scaled().to(self.device), config.batch_size, config.seed
            )

    # ------------------------------------------------------------------ training
    @property
    def steps_per_epoch(self) -> int:
        return self.batches.steps_per_epoch

    def __repr__(self) -> str:
        # fit() returns the trainer, so this is what a cell ending in fit(...) shows.
        c = self.config
        return (f"GANTrainer({MODEL_TITLES[c.model]}, {c.recipe} recipe, {c.dataset}, step {self.step}, "
                f"out_dir={str(self.out_dir) if self.out_dir is not None else None!r})")

    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / "checkpoint.pt" if self.out_dir is not None else None

    def _augmentation(self, step: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """What D's inputs pass through at ``step``: ``translate`` by up to
        ``config.augment_shift(step)`` pixels, or None where that is 0."""
        shift = self.config.augment_shift(step)
        return partial(translate, max_shift=shift, generator=self.augment_rng) if shift else None

    def learning_rate(self, step: int) -> float:
        """D's lr for training step ``step`` (0-based): ``config.lr``, falling linearly to
        0 over ``decay_steps`` from ``decay_start`` when decay is on. G's is
        ``config.g_lr_factor`` times it."""
        c = self.config
        if c.decay_steps == 0 or step < c.decay_start:
            return c.lr
        return c.lr * max(0.0, 1.0 - (step - c.decay_start) / c.decay_steps)

    def fit(
        self,
        epochs: float | None = None,
        steps: int | None = None,
        seconds: float | None = None,
        hooks: Iterable[Hook] | Hook = (),
        hook_every: int = 1,
        progress: bool = True,
    ) -> "GANTrainer":
        """Train until ``epochs`` (total, counted from step 0), ``steps`` (total) or
        ``seconds`` (of this call), whichever comes first; at least one must be given.

        With lr decay on, training also stops where the lr reaches 0
        (``decay_start + decay_steps``). Calls each hook every ``hook_every`` steps and
        once more at the end (``event.final``); one hook may be passed without a list.
        Ctrl-C or a kernel interrupt stops after the current step, saves a checkpoint and
        returns with ``self.interrupted`` set; call ``fit`` again to continue. Raises
        TrainingDiverged on a NaN or infinite loss.
        """
        if epochs is None and steps is None and seconds is None:
            raise ValueError("fit needs a stopping rule: epochs=, steps= or seconds=")
        for name, value in (("epochs", epochs), ("steps", steps), ("seconds", seconds)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
        if isinstance(hook_every, bool) or not isinstance(hook_every, numbers.Integral) \
                or hook_every < 1:
            raise ValueError(f"hook_every must be a positive integer (steps between hook "
                             f"calls), got {hook_every!r}")
        hooks = [hooks] if callable(hooks) else list(hooks)
        target = math.inf
        if epochs is not None:
            target = min(target, round(epochs * self.steps_per_epoch))
        if steps is not None:
            target = min(target, steps)
        # Past the end of the decay the lr is 0 and a step changes no weight: stop there.
        lr_zero_at = self.config.decay_start + self.config.decay_steps
        stops_at_zero_lr = self.config.decay_steps > 0 and target > lr_zero_at
        if stops_at_zero_lr:
            target = lr_zero_at
        if self.step >= target and not stops_at_zero_lr:
            # A second fit(steps=1000) is easily read as "1,000 more"; say why nothing runs.
            self.log(f"note: nothing to train: the run is already at step {self.step} and its "
                     f"limit is step {target} (limits in steps and epochs count from step 0). "
                     f"For 1,000 more steps ask for {self.step + 1000}: steps={self.step + 1000}, "
                     f"or --max-steps {self.step + 1000}.")
        deadline = time.monotonic() + seconds if seconds is not None else math.inf
        self._claim_out_dir()
        self.interrupted = False
        last_checkpoint = time.monotonic()
        bar = self._progress_bar(target, progress)
        restore_sigint = self._catch_sigint()
        z_shape = (self.config.batch_size, self.config.latent_dim)
        try:
            self.generator.train()
            self.discriminator.train()
            while self.step < target and time.monotonic() < deadline and not self.interrupted:
                epoch, start = divmod(self.step, self.steps_per_epoch)
                for real in self.batches.epoch(epoch, start):
                    z = torch.randn(
                        (real.shape[0],) + z_shape[1:], generator=self.noise_rng,
                        device=self.device,
                    )
                    if self.config.augment_ramp:
                        self.augment = self._augmentation(self.step)
                    if self.config.decay_steps:
                        lr = self.learning_rate(self.step)
                        for group in self.opt_d.param_groups:
                            group["lr"] = lr
                        for group in self.opt_g.param_groups:
                            group["lr"] = lr * self.config.g_lr_factor
                    try:
                        stats = train_step(
                            self.generator, self.discriminator, self.opt_g, self.opt_d,
                            self.criterion, real, z, self.augment,
                            1.0 - self.config.label_smoothing,
                        )
                    except RuntimeError as err:
                        # BCELoss refuses NaN probabilities before we could see the loss.
                        if "between 0 and 1" in str(err):
                            raise self._diverged([math.nan] * len(HISTORY_KEYS)) from err
                        raise
                    if self.config.r1 and (self.step + 1) % R1_EVERY == 0:
                        r1_step(self.discriminator, self.opt_d, real, self.config.r1)
                    values = torch.stack(
                        [stats.g_loss, stats.d_loss, stats.d_real, stats.d_fake]
                    ).tolist()
                    if not all(map(math.isfinite, values)):
                        raise self._diverged(values)
                    self.step += 1
                    if self.ema_generator is not None:
                        self._update_ema()
                    for key, value in zip(HISTORY_KEYS, values):
                        self.history[key].append(value)
                    if bar is not None:
                        bar.update(1)
                    if self.step % self.config.sample_interval == 0:
                        self.save_grid()
                    if hooks and self.step % hook_every == 0:
                        self._call_hooks(hooks, final=False)
                    now = time.monotonic()
                    if self.checkpoint_path and now - last_checkpoint >= self.checkpoint_every:
                        self.save_checkpoint()
                        last_checkpoint = now
                    if self.step >= target or now >= deadline or self.interrupted:
                        break
        finally:
            restore_sigint()
            if bar is not None:
                bar.close()
        if stops_at_zero_lr and self.step == lr_zero_at:
            self.log(f"Stopped at step {lr_zero_at}: the learning rate decays to 0 there "
                     "(decay_start + decay_steps), so later steps would change nothing.")
        self._finish(hooks)
        return self

    def _claim_out_dir(self) -> None:
        """Before a run first writes into ``out_dir``: if the folder holds the files of
        another run (its checkpoint.pt, step_*.png grids, early_vs_late.png), move them
        into ``out_dir/previous/``, replacing the files of an older run there. Otherwise
        the new run would mix its grids with theirs and, at its first checkpoint,
        replace the other run's training state. A trainer continuing the checkpoint in
        ``out_dir`` leaves the folder as it is."""
        if self._out_dir_claimed or self.out_dir is None:
            return
        _check_writable(self.out_dir)  # before training, not at the first save
        self._out_dir_claimed = True
        here = self.checkpoint_path
        if self.resumed_from is not None and here.exists() and here.resolve() == self.resumed_from:
            if self.out_dir.resolve().name == EARLIER_RUN_DIR:
                self.log(f"note: this run continues in {self.out_dir}, where the next new run in "
                         f"{self.out_dir.parent} puts the run before it, replacing this one. To "
                         "keep it, continue it in a folder of its own (--out on the command "
                         "line, out_dir in Python).")
            return
        earlier = _run_files(self.out_dir)
        if not earlier:
            return
        previous = self.out_dir / EARLIER_RUN_DIR
        previous.mkdir(exist_ok=True)
        for old in _run_files(previous):
            old.unlink()
        for path in earlier:
            os.replace(path, previous / path.name)
        self.log(f"{self.out_dir} held another run's files; moved them to {previous} (its "
                 "checkpoint.pt can still be resumed; the next new run here replaces them).")

    def _finish(self, hooks: list[Hook]) -> None:
        if self.out_dir is not None:
            if not self.saved_grids or self.saved_grids[-1].stem != f"step_{self.step:07d}":
                self.save_grid()
            self.save_checkpoint()  # first: a figure that fails must not cost the training
            self.save_early_vs_late()
            self.save_film()
        if hooks:
            self._call_hooks(hooks, final=True)
        if self.interrupted:
            where = f"; checkpoint: {self.checkpoint_path}" if self.checkpoint_path else ""
            self.log(f"Interrupted at step {self.step}{where}. Call fit() again to continue.")

    def _diverged(self, values: list[float]) -> TrainingDiverged:
        kept = self.checkpoint_path if self.checkpoint_path and self.checkpoint_path.exists() else None
        named = ", ".join(f"{k}={v}" for k, v in zip(HISTORY_KEYS, values))
        return TrainingDiverged(
            f"training diverged at step {self.step + 1}: {named}. "
            + (f"The last good checkpoint is kept at {kept}. " if kept else "")
            + "Try a lower --lr, or --loss bce-logits, which stays finite when D saturates."
        )

    def _call_hooks(self, hooks: list[Hook], final: bool) -> None:
        h = self.history
        if not h["g_loss"]:
            return
        event = TrainEvent(
            self, self.step, self.step / self.steps_per_epoch,
            h["g_loss"][-1], h["d_loss"][-1], h["d_real"][-1], h["d_fake"][-1], final,
        )
        for hook in hooks:
            hook(event)

    def _progress_bar(self, target: float, progress: bool):
        if not progress:
            return None
        from tqdm.auto import tqdm
        from tqdm.notebook import tqdm as notebook_bar

        total = None if math.isinf(target) else int(target)
        options = {}
        if (not issubclass(tqdm, notebook_bar) and not _is_terminal(sys.stderr)
                and "TQDM_MININTERVAL" not in os.environ):
            # Written to a file (`make train > train.log`), every redraw of the bar stays
            # there: ten a second filled logs with thousands; one every 30 s tells as much.
            options["mininterval"] = 30
        return tqdm(total=total, initial=self.step, unit="step",
                    desc=MODEL_TITLES[self.config.model], **options)

    def _catch_sigint(self) -> Callable[[], None]:
        """Turn the first Ctrl-C into a clean stop after the current step (so the
        checkpoint holds a whole step); a second one raises at once."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True

        signal.signal(signal.SIGINT, handler)
        return lambda: signal.signal(signal.SIGINT, previous)

    @torch.no_grad()
    def _update_ema(self) -> None:
        # Warm-up: the average spans about the last ninth of the steps so far (decay
        # (1 + t) / (10 + t)), until that reaches ~1/(1-ema) steps.
        decay = min(self.config.ema, (1 + self.step) / (10 + self.step))
        ema_params = list(self.ema_generator.parameters())
        torch._foreach_lerp_(ema_params, list(self.generator.parameters()), 1.0 - decay)
        # BatchNorm's running statistics are not averaged: G's describe G's own weights,
        # not the average's. ``sampler`` recomputes them for the average when it is read.

    # ------------------------------------------------------------------ sampling
    @property
    def sampler(self) -> nn.Module:
        """The generator to draw samples from: the weight average with ``ema`` > 0,
        else G itself. Training never reads it.

        The average's BatchNorm statistics are recomputed for its own weights
        (``standing_statistics``) whenever it is read at a new step."""
        if self.ema_generator is None:
            return self.generator
        if self._sampler_stats_step != self.step:
            standing_statistics(self.ema_generator, seed=self.config.seed + 4)
            self._sampler_stats_step = self.step
        return self.ema_generator

    @torch.no_grad()
    def fixed_samples(self) -> torch.Tensor:
        """The sampler's images for the fixed noise, in eval mode: (n_samples, 1, 28, 28)
        in [-1, 1]. Eval mode keeps BatchNorm's running statistics out of it, so
        sampling never changes training."""
        sampler = self.sampler
        was_training = sampler.training
        sampler.eval()
        try:
            return sampler(self.fixed_noise).cpu()
        finally:
            sampler.train(was_training)

    def save_grid(self) -> Path | None:
        """Write the fixed-noise grid as ``out_dir/step_XXXXXXX.png`` (torchvision's
        ``save_image``); returns the path, or None without an out_dir."""
        if self.out_dir is None:
            return None
        from torchvision.utils import save_image

        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"step_{self.step:07d}.png"
        save_image(self.fixed_samples(), path, nrow=8, normalize=True, value_range=(-1, 1))
        self.saved_grids.append(path)
        return path

    def save_early_vs_late(self) -> Path | None:
        """The seed's comparison: the first saved grid beside the last one (the first
        that still exists, if grids were deleted since)."""
        grids = [p for p in self.saved_grids if p.exists()]
        if self.out_dir is None or not grids:
            return None
        from .plots import early_vs_late

        path = self.out_dir / "early_vs_late.png"
        early_vs_late(grids[0], grids[-1], path)
        return path

    def save_film(self) -> Path | None:
        """The run's saved grids as an animated GIF, ``out_dir/training.gif``."""
        grids = [p for p in self.saved_grids if p.exists()]
        if self.out_dir is None or not grids:
            return None
        from .plots import training_film

        return training_film(grids, self.out_dir / "training.gif")

    # --------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """Everything needed to continue exactly: both networks and optimizers, the RNG
        states, the step, the loss history and the configuration."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "kind": "training",
            "config": asdict(self.config),
            "step": self.step,
            "generator": self.generator.state_dict(),
            # The sampler, so a file for sampling carries statistics fit for its weights.
            "generator_ema": (
                self.sampler.state_dict() if self.ema_generator is not None else None
            ),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "device": self.device.type,  # whose format the two generators' states are in
            "noise_rng": self.noise_rng.get_state(),
            "augment_rng": self.augment_rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "fixed_noise": self.fixed_noise.cpu(),
            "history": {k: torch.tensor(v, dtype=torch.float64) for k, v in self.history.items()},
            "saved_grids": [str(p) for p in self.saved_grids],
            "data_source": self.data.source,
        }

    def load_state_dict(self, state: dict, source: str = "checkpoint") -> None:
        """Restore a ``state_dict()``; raises CheckpointError if it does not fit."""
        saved = TrainConfig.from_dict(state["config"])
        for name in ("model", "latent_dim", "loss", "g_batchnorm", "width", "d_width"):
            if getattr(saved, name) != getattr(self.config, name):
                raise CheckpointError(
                    f"{source} was trained with {name}={getattr(saved, name)!r}, but this "
                    f"trainer has {name}={getattr(self.config, name)!r}. Resume with the "
                    "checkpoint's own configuration (leave that option out)."
                )
        _load_module(self.generator, state["generator"], source, "generator")
        if self.ema_generator is not None:
            _load_module(self.ema_generator, state.get("generator_ema") or state["generator"],
                         source, "generator")
            self._sampler_stats_step = None  # older checkpoints hold G's statistics here
        _load_module(self.discriminator, state["discriminator"], source, "discriminator")
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self._restore_device_rngs(state, source)
        torch.set_rng_state(state["torch_rng"])
        self.fixed_noise = state["fixed_noise"].to(self.device)
        self.step = int(state["step"])
        self.history = {k: state["history"][k].tolist() for k in HISTORY_KEYS}
        self.saved_grids = [Path(p) for p in state.get("saved_grids", [])]

    def _restore_device_rngs(self, state: dict, source: str) -> None:
        """Restore the noise and augmentation generators, which live on the training
        device. A run moved to another kind of device (trained on a GPU, resumed on a
        laptop's CPU, or back) cannot take them over: a CPU generator's state is not a
        GPU one's, and the two draw different numbers from the same seed anyway. Then
        both are seeded afresh from the run's seed and step, and the log says so."""
        if state["noise_rng"].numel() == self.noise_rng.get_state().numel():
            self.noise_rng.set_state(state["noise_rng"])
            if "augment_rng" in state:
                self.augment_rng.set_state(state["augment_rng"])
            return
        step, seed = int(state["step"]), self.config.seed
        self.noise_rng.manual_seed(seed + 1 + 1_000_003 * step)
        self.augment_rng.manual_seed(seed + 3 + 1_000_003 * step)
        trained_on = state.get("device", "another kind of device")
        self.log(f"note: {source} was trained on {trained_on} and continues on "
                 f"{self.device.type}: its noise is drawn afresh from step {step} on, so the "
                 f"run will not repeat, number for number, one that stayed on {trained_on}.")

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path:
        """Write the checkpoint atomically (default: ``out_dir/checkpoint.pt``)."""
        path = Path(path) if path is not None else self.checkpoint_path
        if path is None:
            raise ValueError("no checkpoint path: pass one or give the trainer an out_dir")
        atomic_save(self.state_dict(), path)
        return path

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        data: ImageSet | None = None,
        out_dir: str | os.PathLike | None = None,
        **kwargs,
    ) -> "GANTrainer":
        """Rebuild a trainer from a training checkpoint, ready to ``fit`` further.
        ``out_dir`` defaults to the checkpoint's folder. ``path`` may be the folder."""
        path = checkpoint_file(path)
        state = load_checkpoint(path)
        if state.get("kind") != "training":
            raise CheckpointError(
                f"{path} holds only a generator (for sampling), not a training state; "
                "it cannot be resumed. Start a new run instead."
            )
        config = TrainConfig.from_dict(state["config"])
        trainer = cls(
            config, data=data,
            out_dir=out_dir if out_dir is not None else Path(path).parent, **kwargs,
        )
        trainer.load_state_dict(state, str(path))
        trainer.resumed_from = Path(path).resolve()
        # The run's grids lie beside its checkpoint, wherever the folder has moved since.
        folder = Path(path).parent
        trainer.saved_grids = [
            folder / p.name if (folder / p.name).exists() else p for p in trainer.saved_grids
        ]
        return trainer


def _is_terminal(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _run_files(folder: Path) -> list[Path]:
    """The files a run writes into its folder: checkpoint.pt, early_vs_late.png,
    training.gif and the step_*.png grids, those that exist."""
    named = [folder / "checkpoint.pt", folder / "early_vs_late.png", folder / "training.gif"]
    return [p for p in named if p.exists()] + sorted(folder.glob("step_*.png"))


def _load_module(module: nn.Module, state: dict, source: str, what: str) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise CheckpointError(
            f"{source}: its {what} does not match a {type(module).__name__} "
            f"({first}). The checkpoint is from another architecture; build the model "
            "it was trained with, or use the checkpoint's own configuration."
        ) from err


def _check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and make sure files can be written there; raise an
    OSError that names the folder and the fix otherwise."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        why = "it is a file, not a folder" if folder.exists() and not folder.is_dir() else (
            err.strerror or err)
        raise OSError(
            f"cannot write to the output folder {folder} ({why}); "
            "choose a folder you can write to (--out on the command line, out_dir in Python)"
        ) from err


def atomic_save(obj: dict, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``: a
    crash or a full disk mid-write leaves the previous file whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The checkpoint file ``path`` names: the path itself, or, for a run folder (what
    ``train --out`` writes), the ``checkpoint.pt`` inside it."""
    path = Path(path)
    if path.is_dir():
        if not (path / "checkpoint.pt").is_file():
            raise CheckpointError(
                f"{path} is a folder with no checkpoint.pt in it; pass a run folder that "
                "`python -m gan_helpers train` wrote, or a checkpoint file."
            )
        return path / "checkpoint.pt"
    return path


def _load_failure(err: Exception) -> str:
    """The reason in ``err`` from ``torch.load``, in one line. torch's weights-only
    refusal opens with advice to load with ``weights_only=False``, which would run any
    code the file holds: the course never gives that advice, so only the reason is kept."""
    text = str(err)
    if "WeightsUnpickler error" in text:
        reason = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
        reason = reason.split(". Please use")[0]  # how to allow a class: not for a checkpoint
        return (f"it holds something that torch.load(weights_only=True) will not unpickle: "
                f"{reason}")
    if isinstance(err, EOFError):
        return "EOFError: the file ends too soon"
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint with ``torch.load(..., weights_only=True)`` (no code runs from
    the file) and check that it is one of ours. ``path`` may be a run folder: its
    ``checkpoint.pt`` is read."""
    path = checkpoint_file(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({_load_failure(err)}). It may be "
            "truncated or from another program; use another checkpoint or retrain."
        ) from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is a PyTorch file but not a gan_helpers checkpoint (no "
            f"'format': '{CHECKPOINT_FORMAT}' entry). Pass a checkpoint.pt written by "
            "`python -m gan_helpers train` or a shipped generator file."
        )
    return state


def load_generator(
    path: str | os.PathLike, model: str | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, TrainConfig]:
    """The generator from a training checkpoint (its weight average when the run kept
    one) or a generator-only file, in eval mode, with its TrainConfig. ``model`` ("fc" / "dcgan"), if given, must match the file."""
    state = load_checkpoint(path)
    config = TrainConfig.from_dict(state["config"])
    if model is not None and model != config.model:
        raise CheckpointError(
            f"{path} holds a {config.model!r} generator, not {model!r}: pass "
            f"--model {config.model} or another checkpoint."
        )
    generator, _ = build_models(
        config.model, config.latent_dim, uses_logits(config.loss), config.g_batchnorm, config.width
    )
    # A training checkpoint's sampler is the weight average where the run kept one.
    weights = state.get("generator_ema") or state["generator"]
    _load_module(generator, weights, str(path), "generator")
    return generator.to(resolve_device(device)).eval(), config


def save_generator(generator: nn.Module, config: TrainConfig, path: str | os.PathLike) -> Path:
    """Write a generator-only file (what sampling needs, nothing more), atomically."""
    atomic_save(
        {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "kind": "generator",
            "config": asdict(config),
            "generator": generator.state_dict(),
        },
        path,
    )
    return Path(path)


PRETRAINED_DIR = Path(__file__).resolve().parent / "weights"


def pretrained_file(model: str) -> Path:
    """The file of the generator shipped for ``model``, ``"fc"`` or ``"dcgan"`` (any case)."""
    path = PRETRAINED_DIR / f"generator-{model.lower()}.pt"
    if not path.exists():
        raise CheckpointError(f"no pretrained {model!r} generator at {path}; choose 'fc' or 'dcgan'")
    return path


def pretrained(model: str = "fc") -> nn.Module:
    """A generator trained for longer and shipped with the package, in eval mode:
    ``"fc"`` or ``"dcgan"`` (README gives the commands that made them and their scores).
    """
    generator, _ = load_generator(pretrained_file(model))
    return generator


@torch.no_grad()
def generate(
    generator: nn.Module, n: int, seed: int | None = None,
    device: str | torch.device | None = None, batch_size: int = 1000,
) -> torch.Tensor:
    """Draw ``n`` images from ``generator`` (in eval mode): (n, 1, 28, 28) in [-1, 1],
    on the CPU, ready to plot, save or score. The noise, (n, latent_dim) ~ N(0, 1), is
    drawn in one go on the CPU from ``seed`` (the same noise on any device); the
    generator runs where its weights are (or on ``device``, where it is moved first) on
    ``batch_size`` of it at a time, so a large ``n`` needs no more memory than that."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n is how many images to draw, a whole number >= 0; got {n!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive whole number, got {batch_size!r}")
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    z = torch.randn(n, noise_size(generator), generator=g)
    if device is not None:
        generator.to(resolve_device(device))
    dev = device_of(generator)
    was_training = generator.training
    generator.eval()
    try:
        return torch.cat([generator(chunk.to(dev)).cpu() for chunk in z.split(batch_size)])
    finally:
        generator.train(was_training)


__all__ = [
    "TrainConfig", "StepStats", "TrainEvent", "GANTrainer", "TrainingDiverged",
    "CheckpointError", "train_step", "r1_step", "train_briefly", "atomic_save", "checkpoint_file",
    "load_checkpoint", "load_generator", "save_generator", "generate", "pretrained",
    "pretrained_file", "standing_statistics", "resolve_device", "RECIPES", "SEED_EPOCHS",
]
