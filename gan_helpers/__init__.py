"""gan_helpers: the shared package of the GAN course.

One module per concept: ``data`` (MNIST from IDX files), ``models`` (the seed's FC GAN
and a DCGAN), ``losses`` (BCE / BCE-with-logits), ``augment`` (random shifts of what D
sees), ``config`` (the recipes), ``step`` (the seed's training step), ``trainer`` (the
loop), ``checkpoints`` (saving, loading, shipped generators), ``live`` (notebook
dashboards), ``plots`` and ``diagrams`` (static figures), ``toy`` (a GAN in 2-D),
``metrics`` (sample quality), ``checks``, ``assignments`` and ``grading`` (exercises,
release, grading), ``cli`` (``python -m gan_helpers``).
"""


def _installed_version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "(version unknown)"


try:
    import torchvision  # noqa: F401  (every module below needs it)
except RuntimeError as err:  # e.g. "operator torchvision::nms does not exist"
    import torch

    raise ImportError(
        f"torchvision {_installed_version('torchvision')} does not fit the installed torch "
        f"{torch.__version__} ({str(err).splitlines()[0]}). They must be installed as a "
        "matching pair: `pip install --force-reinstall torch torchvision`, both unpinned "
        "(or delete .venv and run `make test` again). Pinning torch alone to a local wheel "
        "is what usually causes this."
    ) from err

from .data import ImageSet, load_images
from .losses import adversarial_loss, discriminator_loss, generator_loss
from .models import (
    DCGANDiscriminator,
    DCGANGenerator,
    FCDiscriminator,
    FCGenerator,
    build_models,
    count_parameters,
)
from .checkpoints import generate, load_checkpoint, load_generator, pretrained
from .config import TrainConfig
from .step import train_step
from .trainer import GANTrainer

__version__ = "0.1.0"

__all__ = [
    "ImageSet", "load_images", "adversarial_loss", "discriminator_loss", "generator_loss",
    "DCGANDiscriminator", "DCGANGenerator", "FCDiscriminator", "FCGenerator",
    "build_models", "count_parameters", "GANTrainer", "TrainConfig", "generate",
    "load_checkpoint", "load_generator", "pretrained", "train_step",
]
