"""gan_helpers: the shared package of the GAN course.

One module per concept: ``data`` (MNIST from IDX files), ``models`` (the seed's FC GAN
and a DCGAN), ``losses`` (BCE / BCE-with-logits), ``augment`` (random shifts of what D
sees), ``training`` (the seed's step, the trainer, checkpoints, pretrained generators),
``live`` (notebook dashboards), ``plots`` (static figures), ``metrics`` (sample
quality), ``checks`` and ``assignments`` (exercises, release, grading), ``cli``
(``python -m gan_helpers``).
"""

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
from .training import (
    GANTrainer,
    TrainConfig,
    generate,
    load_checkpoint,
    load_generator,
    pretrained,
    train_step,
)

__version__ = "0.1.0"

__all__ = [
    "ImageSet", "load_images", "adversarial_loss", "discriminator_loss", "generator_loss",
    "DCGANDiscriminator", "DCGANGenerator", "FCDiscriminator", "FCGenerator",
    "build_models", "count_parameters", "GANTrainer", "TrainConfig", "generate",
    "load_checkpoint", "load_generator", "pretrained", "train_step",
]
