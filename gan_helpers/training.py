"""Deprecated: ``gan_helpers.training`` was split into ``config``, ``step``, ``trainer``
and ``checkpoints``. Notebooks released before the split import from here; this keeps
them working and says where each name lives now."""

import warnings

from .checkpoints import (CheckpointError, atomic_save, checkpoint_file, generate,
                          load_checkpoint, load_generator, pretrained, pretrained_file,
                          save_generator)
from .config import RECIPES, SEED_EPOCHS, TrainConfig, resolve_device
from .step import StepStats, r1_step, standing_statistics, train_briefly, train_step
from .trainer import GANTrainer, TrainEvent, TrainingDiverged

warnings.warn("gan_helpers.training is deprecated: import from gan_helpers.config, .step, "
              ".trainer or .checkpoints", DeprecationWarning, stacklevel=2)

__all__ = [
    "TrainConfig", "StepStats", "TrainEvent", "GANTrainer", "TrainingDiverged",
    "CheckpointError", "train_step", "r1_step", "train_briefly", "atomic_save", "checkpoint_file",
    "load_checkpoint", "load_generator", "save_generator", "generate", "pretrained",
    "pretrained_file", "standing_statistics", "resolve_device", "RECIPES", "SEED_EPOCHS",
]
