"""Checkpoints: the format, atomic writes, safe loads, and the shipped generators.

A training checkpoint (``kind`` "training") holds both networks, G's weight average,
both optimizers, the RNG states, the step, the loss history and the configuration:
everything to continue bit for bit. A generator file (``kind`` "generator") holds what
sampling needs. Both are written atomically and read with ``weights_only=True``.
"""

from __future__ import annotations

import glob
import numbers
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .config import TrainConfig, resolve_device
from .models import build_models, device_of, noise_size
from .losses import uses_logits

if TYPE_CHECKING:
    from .trainer import GANTrainer

CHECKPOINT_FORMAT = "gan-course-checkpoint"
CHECKPOINT_VERSION = 1
HISTORY_KEYS = ("g_loss", "d_loss", "d_real", "d_fake")
EARLIER_RUN_DIR = "previous"  # where a new run moves the files of the run before it


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged or of another architecture."""


def training_state(trainer: "GANTrainer") -> dict:
    """Everything needed to continue exactly: both networks and optimizers, the RNG
    states, the step, the loss history and the configuration."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "kind": "training",
        "config": asdict(trainer.config),
        "step": trainer.step,
        "generator": trainer.generator.state_dict(),
        # The sampler, so a file for sampling carries statistics fit for its weights.
        "generator_ema": (
            trainer.sampler.state_dict() if trainer.ema_generator is not None else None
        ),
        "discriminator": trainer.discriminator.state_dict(),
        "opt_g": trainer.opt_g.state_dict(),
        "opt_d": trainer.opt_d.state_dict(),
        "device": trainer.device.type,  # whose format the two generators' states are in
        "noise_rng": trainer.noise_rng.get_state(),
        "augment_rng": trainer.augment_rng.get_state(),
        "torch_rng": torch.get_rng_state(),
        "fixed_noise": trainer.fixed_noise.cpu(),
        "history": {k: torch.tensor(v, dtype=torch.float64) for k, v in trainer.history.items()},
        "saved_grids": [str(p) for p in trainer.saved_grids],
        "data_source": trainer.data.source,
    }


def restore_training_state(trainer: "GANTrainer", state: dict, source: str = "checkpoint") -> None:
    """Restore a ``state_dict()``; raises CheckpointError if it does not fit."""
    saved = TrainConfig.from_dict(state["config"])
    for name in ("model", "latent_dim", "loss", "g_batchnorm", "width", "d_width"):
        if getattr(saved, name) != getattr(trainer.config, name):
            raise CheckpointError(
                f"{source} was trained with {name}={getattr(saved, name)!r}, but this "
                f"trainer has {name}={getattr(trainer.config, name)!r}. Resume with the "
                "checkpoint's own configuration (leave that option out)."
            )
    _load_module(trainer.generator, state["generator"], source, "generator")
    if trainer.ema_generator is not None:
        _load_module(trainer.ema_generator, state.get("generator_ema") or state["generator"],
                     source, "generator")
        trainer._sampler_stats_step = None  # older checkpoints hold G's statistics here
    _load_module(trainer.discriminator, state["discriminator"], source, "discriminator")
    trainer.opt_g.load_state_dict(state["opt_g"])
    trainer.opt_d.load_state_dict(state["opt_d"])
    _restore_device_rngs(trainer, state, source)
    torch.set_rng_state(state["torch_rng"])
    trainer.fixed_noise = state["fixed_noise"].to(trainer.device)
    trainer.step = int(state["step"])
    trainer.history = {k: state["history"][k].tolist() for k in HISTORY_KEYS}
    trainer.saved_grids = [Path(p) for p in state.get("saved_grids", [])]


def _restore_device_rngs(trainer: "GANTrainer", state: dict, source: str) -> None:
    """Restore the noise and augmentation generators, which live on the training
    device. A run moved to another kind of device (trained on a GPU, resumed on a
    laptop's CPU, or back) cannot take them over: a CPU generator's state is not a
    GPU one's, and the two draw different numbers from the same seed anyway. Then
    both are seeded afresh from the run's seed and step, and the log says so."""
    if state["noise_rng"].numel() == trainer.noise_rng.get_state().numel():
        trainer.noise_rng.set_state(state["noise_rng"])
        if "augment_rng" in state:
            trainer.augment_rng.set_state(state["augment_rng"])
        return
    step, seed = int(state["step"]), trainer.config.seed
    trainer.noise_rng.manual_seed(seed + 1 + 1_000_003 * step)
    trainer.augment_rng.manual_seed(seed + 3 + 1_000_003 * step)
    trained_on = state.get("device", "another kind of device")
    trainer.log(f"note: {source} was trained on {trained_on} and continues on "
             f"{trainer.device.type}: its noise is drawn afresh from step {step} on, so the "
             f"run will not repeat, number for number, one that stayed on {trained_on}.")


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


def atomic_save(obj: dict, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``: a
    crash or a full disk mid-write leaves the previous file whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphaned_writes(path)
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


def _remove_orphaned_writes(path: Path) -> None:
    """Delete the temporary files that writes of ``path`` left when their process was
    killed mid-write (SIGKILL, power loss): ``.NAME.PID.tmp`` whose PID no process on
    this machine has. Best effort: a failure here never stops a save. POSIX only (on
    Windows, signal 0 is not a liveness test)."""
    if os.name != "posix":
        return
    prefix = f".{path.name}."
    for tmp in path.parent.glob(glob.escape(prefix) + "*.tmp"):
        pid = tmp.name[len(prefix):-len(".tmp")]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        except (OSError, OverflowError):  # running as another user, or no PID at all
            pass


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
    ``"fc"`` or ``"dcgan"`` (bench/RESULTS.md gives the commands that made them).
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


# ------------------------------------------------------------------ run folders
def claim_run_folder(out_dir: Path, resumed_from: Path | None, log) -> None:
    """Make ``out_dir`` ready for a run: writable, and free of another run's files
    (checkpoint.pt, step_*.png, early_vs_late.png, training.gif), which move into
    ``out_dir/previous/``, replacing an older run's there; else the new run would mix
    its grids with theirs and replace their training state at its first checkpoint. A
    run continuing the checkpoint in ``out_dir`` (``resumed_from``) leaves it as it is."""
    _check_writable(out_dir)  # before training, not at the first save
    here = out_dir / "checkpoint.pt"
    if resumed_from is not None and here.exists() and here.resolve() == resumed_from:
        if out_dir.resolve().name == EARLIER_RUN_DIR:
            log(f"note: this run continues in {out_dir}, where the next new run in "
                f"{out_dir.parent} puts the run before it, replacing this one. To "
                "keep it, continue it in a folder of its own (--out on the command "
                "line, out_dir in Python).")
        return
    earlier = _run_files(out_dir)
    if not earlier:
        return
    previous = out_dir / EARLIER_RUN_DIR
    previous.mkdir(exist_ok=True)
    for old in _run_files(previous):
        old.unlink()
    for path in earlier:
        os.replace(path, previous / path.name)
    log(f"{out_dir} held another run's files; moved them to {previous} (its "
        "checkpoint.pt can still be resumed; the next new run here replaces them).")


def _run_files(folder: Path) -> list[Path]:
    """The files a run writes into its folder: checkpoint.pt, early_vs_late.png,
    training.gif and the step_*.png grids, those that exist."""
    named = [folder / "checkpoint.pt", folder / "early_vs_late.png", folder / "training.gif"]
    return [p for p in named if p.exists()] + sorted(folder.glob("step_*.png"))



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
