"""The training loop: ``GANTrainer`` runs the seed's step (``gan_helpers.step``) over
batches until a number of epochs, steps or seconds; calls hooks (the live dashboard);
writes sample grids, the early-vs-late picture, a film and checkpoints; and resumes from
a checkpoint bit for bit on the CPU.
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
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from .augment import translate
from .checkpoints import (HISTORY_KEYS, CheckpointError, atomic_save, checkpoint_file,
                          claim_run_folder, load_checkpoint, restore_training_state,
                          training_state)
from .config import R1_EVERY, TrainConfig, resolve_device
from .data import ImageSet, SeedLoaderBatches, ShuffledBatches, load_images
from .losses import adversarial_loss, uses_logits
from .models import MODEL_TITLES, build_models
from .step import make_optimizer, r1_step, standing_statistics, train_step

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

        self.generator, self.discriminator = _networks(config, self.device)
        self.criterion = adversarial_loss(config.loss)
        self._weights = [*self.generator.parameters(), *self.discriminator.parameters()]
        self._last_checkpoint = time.monotonic()
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
        self.batches = (SeedLoaderBatches(self.data, config.batch_size, config.seed, self.device)
                        if config.recipe == "seed" else
                        ShuffledBatches(self.data.scaled().to(self.device), config.batch_size,
                                        config.seed))

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
        TrainingDiverged on a non-finite loss or weight, before it reaches a checkpoint.
        """
        hooks = [hooks] if callable(hooks) else list(hooks)
        target, stops_at_zero_lr = self._target_step(epochs, steps, seconds, hook_every)
        deadline = time.monotonic() + seconds if seconds is not None else math.inf
        self._claim_out_dir()
        self.interrupted = False
        self._last_checkpoint = time.monotonic()
        bar = self._progress_bar(target, progress)
        restore_sigint = self._catch_sigint()
        try:
            self.generator.train()
            self.discriminator.train()
            while self.step < target and time.monotonic() < deadline and not self.interrupted:
                epoch, start = divmod(self.step, self.steps_per_epoch)
                for real in self.batches.epoch(epoch, start):
                    self._train_on(real)
                    if bar is not None:
                        bar.update(1)
                    self._after_step(hooks, hook_every)
                    if self.step >= target or time.monotonic() >= deadline or self.interrupted:
                        break
        finally:
            restore_sigint()
            if bar is not None:
                bar.close()
        if stops_at_zero_lr and self.step == target:
            self.log(f"Stopped at step {target}: the learning rate decays to 0 there "
                     "(decay_start + decay_steps), so later steps would change nothing.")
        self._finish(hooks)
        return self

    def _target_step(self, epochs, steps, seconds, hook_every) -> tuple[float, bool]:
        """The step ``fit`` stops at (inf for a time limit alone), and whether that is
        where the lr decays to 0; refuses a missing or malformed limit."""
        if epochs is None and steps is None and seconds is None:
            raise ValueError("fit needs a stopping rule: epochs=, steps= or seconds=")
        for name, value in (("epochs", epochs), ("steps", steps), ("seconds", seconds)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
        if isinstance(hook_every, bool) or not isinstance(hook_every, numbers.Integral) \
                or hook_every < 1:
            raise ValueError(f"hook_every must be a positive integer (steps between hook "
                             f"calls), got {hook_every!r}")
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
        return target, stops_at_zero_lr

    def _train_on(self, real: torch.Tensor) -> None:
        """One training step on the real batch (B, 1, 28, 28): the seed's step, the R1
        step where it is due, the weight average and the history. Raises
        TrainingDiverged, leaving ``self.step`` where it was, when a loss or a weight
        of G or D is no longer finite."""
        c = self.config
        z = torch.randn(real.shape[0], c.latent_dim, generator=self.noise_rng, device=self.device)
        if c.augment_ramp:
            self.augment = self._augmentation(self.step)
        if c.decay_steps:
            lr = self.learning_rate(self.step)
            for group in self.opt_d.param_groups:
                group["lr"] = lr
            for group in self.opt_g.param_groups:
                group["lr"] = lr * c.g_lr_factor
        try:
            stats = train_step(self.generator, self.discriminator, self.opt_g, self.opt_d,
                               self.criterion, real, z, self.augment, 1.0 - c.label_smoothing)
        except RuntimeError as err:
            # BCELoss refuses NaN probabilities before we could see the loss.
            if "between 0 and 1" in str(err):
                raise self._diverged([math.nan] * len(HISTORY_KEYS)) from err
            raise
        if c.r1 and (self.step + 1) % R1_EVERY == 0:
            r1_step(self.discriminator, self.opt_d, real, c.r1)
        # One read-back for the four figures and a finiteness test of every weight.
        weights = torch._foreach_norm(self._weights)
        values = torch.stack([stats.g_loss, stats.d_loss, stats.d_real, stats.d_fake,
                              torch.stack(weights).sum()]).tolist()
        if not all(map(math.isfinite, values)):
            raise self._diverged(values[:4], weights_too=math.isfinite(sum(values[:4])))
        self.step += 1
        if self.ema_generator is not None:
            self._update_ema()
        for key, value in zip(HISTORY_KEYS, values):
            self.history[key].append(value)

    def _after_step(self, hooks: list[Hook], hook_every: int) -> None:
        """The bookkeeping between steps: grids, hooks and periodic checkpoints."""
        if self.step % self.config.sample_interval == 0:
            self.save_grid()
        if hooks and self.step % hook_every == 0:
            self._call_hooks(hooks, final=False)
        now = time.monotonic()
        if self.checkpoint_path and now - self._last_checkpoint >= self.checkpoint_every:
            self.save_checkpoint()
            self._last_checkpoint = now

    def _claim_out_dir(self) -> None:
        """Before a run first writes into ``out_dir`` (``checkpoints.claim_run_folder``)."""
        if self._out_dir_claimed or self.out_dir is None:
            return
        claim_run_folder(self.out_dir, self.resumed_from, self.log)
        self._out_dir_claimed = True

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

    def _diverged(self, values: list[float], weights_too: bool = False) -> TrainingDiverged:
        kept = self.checkpoint_path if self.checkpoint_path and self.checkpoint_path.exists() else None
        named = ", ".join(f"{k}={v}" for k, v in zip(HISTORY_KEYS, values))
        what = "a weight of G or D is no longer finite" if weights_too else named
        return TrainingDiverged(
            f"training diverged at step {self.step + 1}: {what}. "
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
        # Warm-up: decay (1 + t) / (1/r + t) weighs step s by about (s/t)^(1/r - 2), whose
        # mean age is r*t steps (r = ema_rampup), until that reaches ~1/(1-ema) steps.
        decay = min(self.config.ema, (1 + self.step) / (1 / self.config.ema_rampup + self.step))
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
        """Everything needed to continue exactly (``checkpoints.training_state``)."""
        return training_state(self)

    def load_state_dict(self, state: dict, source: str = "checkpoint") -> None:
        """Restore a ``state_dict()``; raises CheckpointError if it does not fit."""
        restore_training_state(self, state, source)

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


def _networks(config: TrainConfig, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """G and D of ``config``, initialised from its seed, on ``device``."""
    torch.manual_seed(config.seed)
    nets = [m.to(device) for m in build_models(
        config.model, config.latent_dim, uses_logits(config.loss), config.g_batchnorm,
        config.width, config.d_width)]
    if device.type == "cpu" and config.model == "dcgan":
        # oneDNN's CPU convolutions run faster on channels-last tensors; same maths.
        for net in nets:
            net.to(memory_format=torch.channels_last)
    return nets[0], nets[1]


def _is_terminal(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
