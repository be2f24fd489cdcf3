"""The course's four networks: the seed's fully connected GAN and a DCGAN for 28x28x1.

Every generator maps noise ``z`` of shape (N, latent_dim), drawn from N(0, 1), to images
of shape (N, 1, 28, 28) in [-1, 1] (tanh output, matching data scaled to [-1, 1]).
Every discriminator maps images of shape (N, 1, 28, 28) or (N, 784) to one prediction
per image, shape (N, 1): a probability in (0, 1) when ``logits=False`` (for
``nn.BCELoss``), a raw logit in (-inf, inf) when ``logits=True`` (for
``nn.BCEWithLogitsLoss``, which applies the sigmoid itself).
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

IMAGE_SHAPE = (1, 28, 28)
IMAGE_PIXELS = 28 * 28
LATENT_DIM = 100
LEAKY_SLOPE = 0.2  # the seed's (and DCGAN paper's) LeakyReLU slope


def _check_dtype(x: torch.Tensor, module: nn.Module, what: str) -> None:
    """Refuse ``x`` when its dtype is not the module's weights' (no sync: metadata only)."""
    weights = next(module.parameters()).dtype
    if x.dtype == weights or _autocast_on(x.device.type):  # autocast mixes dtypes on purpose
        return
    if what == "images" and not x.is_floating_point():
        fix = "Scale pixels 0..255 to floats in [-1, 1] first: images.float() / 127.5 - 1."
    else:
        fix = f"Convert them with .to({weights})."
        if x.dtype == torch.float64:
            fix += " (torch.from_numpy keeps numpy's float64.)"
    raise ValueError(f"{type(module).__name__} has {str(weights).replace('torch.', '')} "
                     f"weights but got {what} of dtype {str(x.dtype).replace('torch.', '')}. {fix}")


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()


def _check_size(model: str, **sizes: int) -> None:
    """Refuse a layer size that is not a positive whole number, naming it."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{model}: {name} must be a positive whole number (int), got {value!r}")


def noise_size(generator: nn.Module) -> int:
    """Length of the noise vector ``generator`` takes: its ``latent_dim`` attribute, which
    the course's generators carry, else the course's 100 (a student's own module)."""
    return getattr(generator, "latent_dim", LATENT_DIM)


def device_of(module: nn.Module) -> torch.device:
    """The device ``module``'s weights are on (the CPU for a module without any): where
    its inputs must be."""
    weights = next(module.parameters(), None)
    return weights.device if weights is not None else torch.device("cpu")


def _check_latent(z: torch.Tensor, latent_dim: int, model: str) -> None:
    if z.dim() == 2 and z.shape[1] == latent_dim:
        return
    problem = f"{model} expects noise of shape (N, {latent_dim}), got {tuple(z.shape)}."
    if z.dim() == 2:
        fix = (f"Draw it with torch.randn(N, {latent_dim}), or build the generator with "
               f"latent_dim={z.shape[1]} to match your noise.")
    elif z.dim() > 2 and z.shape[1] == latent_dim and z[0].numel() == latent_dim:
        # pytorch/examples' DCGAN draws (N, nz, 1, 1); here G adds the 1 x 1 axes itself.
        fix = f"Pass it as (N, {latent_dim}): z.flatten(1)."
    else:
        fix = f"Draw it with torch.randn(N, {latent_dim}): one vector per image."
    raise ValueError(f"{problem} {fix}")


def _check_images(x: torch.Tensor, model: str) -> None:
    shape = tuple(x.shape)
    if (x.dim() == 4 and shape[1:] == IMAGE_SHAPE) or (x.dim() == 2 and shape[1] == IMAGE_PIXELS):
        return
    if shape == IMAGE_SHAPE:
        fix = "A single image needs a batch axis: x.unsqueeze(0)."
    elif x.dim() == 3 and shape[1:] == IMAGE_SHAPE[1:]:
        # What `sample --out .npy` writes and what MNIST's raw arrays hold.
        fix = "A batch of 28x28 images needs its channel axis: x.unsqueeze(1)."
    elif shape in (IMAGE_SHAPE[1:], (IMAGE_PIXELS,)):
        fix = "A single image needs a batch axis: x.view(1, 1, 28, 28)."
    elif x.dim() == 4 and shape[2:] == IMAGE_SHAPE[1:]:
        fix = (f"These images have {shape[1]} channels; the course's networks take grey "
               "images, one channel.")
    else:
        fix = "The course's networks take 28x28 grey images, as gan_helpers.data loads them."
    raise ValueError(
        f"{model} expects images of shape (N, 1, 28, 28) or (N, 784), got {shape}. {fix}"
    )


class FCGenerator(nn.Module):
    """The seed's fully connected generator: 100 -> 128 -> 256 -> 512 -> 784.

    Shapes: z (N, latent_dim) -> (N, 128) -> (N, 256) -> (N, 512) -> (N, 784)
    -> reshaped to (N, 1, 28, 28). LeakyReLU(0.2) after each hidden layer, tanh at the
    output so pixels land in [-1, 1] like the scaled data.

    ``batchnorm=True`` adds BatchNorm1d after the second and third linear layers (the
    choice of the PyTorch-GAN code the seed comes from). It keeps the hidden activations
    at a steady scale while D's feedback shifts, which makes the generator learn faster
    early on; the seed's architecture is ``batchnorm=False``.
    """

    def __init__(self, latent_dim: int = LATENT_DIM, batchnorm: bool = False) -> None:
        super().__init__()
        _check_size(type(self).__name__, latent_dim=latent_dim)
        self.latent_dim = latent_dim
        self.batchnorm = batchnorm
        widths = [latent_dim, 128, 256, 512]
        layers: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(w_in, w_out))
            # Never on the first layer: normalising the raw noise's projection only
            # removes information the noise already has at unit scale.
            if batchnorm and i > 0:
                layers.append(nn.BatchNorm1d(w_out))
            layers.append(nn.LeakyReLU(LEAKY_SLOPE, inplace=True))
        layers += [nn.Linear(512, IMAGE_PIXELS), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: (N, latent_dim) noise -> images (N, 1, 28, 28) in [-1, 1]."""
        _check_latent(z, self.latent_dim, type(self).__name__)
        _check_dtype(z, self, "noise")
        return self.net(z).view(z.shape[0], *IMAGE_SHAPE)


class FCDiscriminator(nn.Module):
    """The seed's fully connected discriminator: 784 -> 512 -> 256 -> 1.

    Shapes: x (N, 1, 28, 28) or (N, 784) -> (N, 784) -> (N, 512) -> (N, 256) -> (N, 1).
    LeakyReLU(0.2) after each hidden layer. The output is a probability (sigmoid) unless
    ``logits=True``, for ``BCEWithLogitsLoss``.
    """

    def __init__(self, logits: bool = False) -> None:
        super().__init__()
        self.logits = logits
        layers: list[nn.Module] = [
            nn.Linear(IMAGE_PIXELS, 512),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            nn.Linear(512, 256),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            nn.Linear(256, 1),
        ]
        if not logits:
            layers.append(nn.Sigmoid())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, 28, 28) or (N, 784) in [-1, 1] -> (N, 1) probability or logit."""
        _check_images(x, type(self).__name__)
        _check_dtype(x, self, "images")
        return self.net(x.reshape(x.shape[0], IMAGE_PIXELS))

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        """D's score before any sigmoid: (N, 1) real numbers, for the R1 penalty."""
        _check_images(x, type(self).__name__)
        _check_dtype(x, self, "images")
        body = self.net if self.logits else self.net[:-1]
        return body(x.reshape(x.shape[0], IMAGE_PIXELS))


class DCGANGenerator(nn.Module):
    """DCGAN generator for 28x28x1, by the seed's rules.

    No pooling and no fully connected layer: the noise is treated as a 1x1 image with
    ``latent_dim`` channels and upsampled by transposed convolutions. BatchNorm + ReLU in
    every layer but the output, which is tanh (no BatchNorm there, as in the paper).

    Shapes (ngf = ``width``, 64 by default):
        z (N, latent_dim) -> view (N, latent_dim, 1, 1)
        ConvTranspose 4x4 s1 p0 -> (N, 4*ngf, 4, 4)    BatchNorm, ReLU
        ConvTranspose 3x3 s2 p1 -> (N, 2*ngf, 7, 7)    BatchNorm, ReLU
        ConvTranspose 4x4 s2 p1 -> (N, ngf, 14, 14)    BatchNorm, ReLU
        ConvTranspose 4x4 s2 p1 -> (N, 1, 28, 28)      tanh, in [-1, 1]
    """

    def __init__(self, latent_dim: int = LATENT_DIM, width: int = 64) -> None:
        super().__init__()
        _check_size(type(self).__name__, latent_dim=latent_dim, width=width)
        self.latent_dim = latent_dim
        self.width = width
        ngf = width
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 4 * ngf, 4, 1, 0, bias=False),
            nn.BatchNorm2d(4 * ngf),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(4 * ngf, 2 * ngf, 3, 2, 1, bias=False),
            nn.BatchNorm2d(2 * ngf),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * ngf, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False),
            nn.Tanh(),
        )
        init_dcgan_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: (N, latent_dim) noise -> images (N, 1, 28, 28) in [-1, 1]."""
        _check_latent(z, self.latent_dim, type(self).__name__)
        _check_dtype(z, self, "noise")
        return self.net(z.view(z.shape[0], self.latent_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator for 28x28x1, by the seed's rules.

    Strided convolutions instead of pooling, LeakyReLU(0.2), BatchNorm in every layer
    but the input one (as in the paper), no fully connected layer: the last convolution
    covers the whole 4x4 map and gives one value per image.

    Shapes (ndf = ``width``, 64 by default):
        x (N, 1, 28, 28)
        Conv 4x4 s2 p1 -> (N, ndf, 14, 14)      LeakyReLU
        Conv 4x4 s2 p1 -> (N, 2*ndf, 7, 7)      BatchNorm, LeakyReLU
        Conv 3x3 s2 p1 -> (N, 4*ndf, 4, 4)      BatchNorm, LeakyReLU
        Conv 4x4 s1 p0 -> (N, 1, 1, 1) -> view (N, 1), then sigmoid unless ``logits``
    """

    def __init__(self, width: int = 64, logits: bool = False) -> None:
        super().__init__()
        _check_size(type(self).__name__, width=width)
        self.width = width
        self.logits = logits
        ndf = width
        layers: list[nn.Module] = [
            nn.Conv2d(1, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            nn.Conv2d(ndf, 2 * ndf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * ndf),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            nn.Conv2d(2 * ndf, 4 * ndf, 3, 2, 1, bias=False),
            nn.BatchNorm2d(4 * ndf),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            nn.Conv2d(4 * ndf, 1, 4, 1, 0, bias=False),
        ]
        if not logits:
            layers.append(nn.Sigmoid())
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, 28, 28) or (N, 784) in [-1, 1] -> (N, 1) probability or logit."""
        _check_images(x, type(self).__name__)
        _check_dtype(x, self, "images")
        return self.net(x.reshape(x.shape[0], *IMAGE_SHAPE)).view(x.shape[0], 1)

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        """D's score before any sigmoid: (N, 1) real numbers, for the R1 penalty."""
        _check_images(x, type(self).__name__)
        _check_dtype(x, self, "images")
        body = self.net if self.logits else self.net[:-1]
        return body(x.reshape(x.shape[0], *IMAGE_SHAPE)).view(x.shape[0], 1)


def init_dcgan_weights(module: nn.Module) -> None:
    """The DCGAN paper's initialisation: conv weights ~ N(0, 0.02), BatchNorm scale
    ~ N(1, 0.02) and shift 0 (as pytorch/examples' dcgan does)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


MODEL_NAMES = ("fc", "dcgan")
MODEL_TITLES = {"fc": "FC GAN", "dcgan": "DCGAN"}  # as progress bars and reprs name them


def build_models(
    model: str = "fc",
    latent_dim: int = LATENT_DIM,
    logits: bool = False,
    batchnorm: bool = False,
    width: int = 64,
    d_width: int | None = None,
) -> tuple[nn.Module, nn.Module]:
    """Build a (generator, discriminator) pair by name: ``"fc"`` or ``"dcgan"``.

    ``logits`` drops D's sigmoid (for BCEWithLogitsLoss); ``batchnorm`` applies to the FC
    generator only (DCGAN always has it); ``width`` to DCGAN only, and ``d_width``, if
    given, to the DCGAN discriminator instead of ``width``.
    """
    if model == "fc":
        return FCGenerator(latent_dim, batchnorm=batchnorm), FCDiscriminator(logits=logits)
    if model == "dcgan":
        return (DCGANGenerator(latent_dim, width),
                DCGANDiscriminator(d_width or width, logits=logits))
    raise ValueError(f"unknown model {model!r}: choose one of {', '.join(MODEL_NAMES)}")


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (weights and biases) in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
