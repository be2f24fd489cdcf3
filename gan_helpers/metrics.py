"""Numbers for sample quality, measured on images no GAN here trained on.

The digit classifier (``DigitClassifier``, about 0.27 M parameters, ~1 MB) is trained on
the training split (``python -m gan_helpers train-classifier``), with part of it held out
to choose when to stop, and its accuracy is reported on the test split. From it:

- ``frechet_distance``: the Fréchet distance between Gaussians fitted to the classifier's
  64-d features of generated images and of the **test split**, computed by torchmetrics'
  ``FrechetInceptionDistance`` with the classifier as its custom feature extractor (the
  Inception network of the usual FID knows nothing of 28 x 28 digits). ``real_floor``
  is what 10,000 real training digits score: the best a generator can expect.
- ``class_histogram`` / ``class_entropy`` / ``classes_missing``: the share of samples
  the classifier puts in each class, the entropy of that share divided by log 10 (1.0
  when all ten classes are equally common), and the classes that (nearly) never appear.
- ``legible``: the share of samples the classifier labels with confidence >= 0.9;
  ``legible_real`` the same share of the test split: what a generator that draws digits
  like the test digits would read.
- ``inception_score``: exp(E_x KL(p(y|x) || p(y))), the Inception-Score analogue: up to
  10 when every sample is one clear digit and all digits are equally common.
- ``memorisation``: whether samples are copies of training digits. Each sample's pixel
  distance to its nearest training digit, against the same distance for test digits
  (which no GAN saw): the median ratio (about 1 for new digits, near 0 for copies) and
  the share of samples nearer to a training digit than 99% of test digits are.

``score_images`` / ``score_generator`` return them as one dict;
``python -m gan_helpers evaluate --checkpoint CKPT`` prints them.
"""

from __future__ import annotations

import copy
import math
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CONFIDENT = 0.9
MISSING_SHARE = 0.01  # a class with under 1% of the samples (a tenth of its fair share)


class DigitClassifier(nn.Module):
    """A small CNN for 28 x 28 x 1 images in [-1, 1]: logits (N, 10).

    Shapes: (N, 1, 28, 28) -> conv 3x3 -> (N, 32, 28, 28) -> conv 3x3 s2 -> (N, 32, 14, 14)
    -> conv 3x3 -> (N, 64, 14, 14) -> conv 3x3 s2 -> (N, 64, 7, 7) -> flatten (N, 3136)
    -> linear -> features (N, 64) -> linear -> logits (N, 10).
    """

    feature_dim = 64

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(64 * 7 * 7, self.feature_dim), nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(self.feature_dim, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 1, 28, 28) in [-1, 1] -> features (N, 64), each >= 0."""
        return self.body(x.reshape(x.shape[0], 1, 28, 28))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 1, 28, 28) in [-1, 1] -> class logits (N, 10)."""
        return self.head(self.features(x))


class _Features(nn.Module):
    """The classifier's feature map, as torchmetrics' custom feature extractor."""

    def __init__(self, classifier: DigitClassifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.feature_dim  # torchmetrics reads this

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x)


def weights_path(dataset: str = "mnist") -> Path:
    """Where the shipped classifier for ``dataset`` lives (``gan_helpers/weights/``)."""
    return WEIGHTS_DIR / f"classifier-{dataset}.pt"


@lru_cache(maxsize=2)
def load_classifier(dataset: str = "mnist") -> DigitClassifier:
    """The shipped classifier for ``dataset``, in eval mode (``weights_only`` load)."""
    path = weights_path(dataset)
    if not path.exists():
        raise FileNotFoundError(
            f"no classifier weights for {dataset} at {path}; train them with "
            f"`python -m gan_helpers train-classifier --dataset {dataset}`"
        )
    model = DigitClassifier()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    return model.eval().requires_grad_(False)


def _shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translations by up to ``max_shift`` pixels (augmentation), per image."""
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    n = x.shape[0]
    dx, dy = (torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)).unbind(0)
    rows = (torch.arange(28).view(1, 28) + dy.view(n, 1))  # (n, 28)
    cols = (torch.arange(28).view(1, 28) + dx.view(n, 1))
    idx = torch.arange(n).view(n, 1, 1)
    return padded[:, 0][idx, rows.view(n, 28, 1), cols.view(n, 1, 28)].unsqueeze(1)


def _outliers(real: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Images that are not digits, for outlier exposure: uniform noise, real digits with
    their pixels shuffled (the same ink, no shape), and two digits drawn over each other.
    Without them a classifier calls noise a digit with full confidence, and an early
    GAN's noise would count as legible."""
    n = len(real)
    third = max(1, n // 3)
    noise = torch.rand(third, 1, 28, 28, generator=generator) * 2 - 1
    flat = real[:third].reshape(third, -1)
    order = torch.argsort(torch.rand(flat.shape, generator=generator), dim=1)
    shuffled = torch.gather(flat, 1, order).view(third, 1, 28, 28)
    other = real[torch.randperm(n, generator=generator)[: n - 2 * third]]
    overlaid = torch.maximum(real[: n - 2 * third], other.flip(-1))
    return torch.cat([noise, shuffled, overlaid])


def train_classifier(
    images: torch.Tensor, labels: torch.Tensor, epochs: int = 5, batch_size: int = 128,
    seed: int = 0, log: Callable[[str], object] = print,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> DigitClassifier:
    """Train a DigitClassifier on images (N, 1, 28, 28) in [-1, 1] and labels (N,).

    Each batch also carries a quarter as many non-digits (``_outliers``) whose target is
    the uniform distribution over the ten classes (outlier exposure), so that the
    classifier's confidence means "this looks like a digit". With ``validation``
    (images, labels), the weights of the epoch with the best validation accuracy are
    returned (early stopping)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = DigitClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = epochs * math.ceil(len(images) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    best_score, best_state = -1.0, None
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(images), generator=g)
        total = 0.0
        for i in range(0, len(images), batch_size):
            idx = perm[i : i + batch_size]
            x = _shift(images[idx], g)
            odd = _outliers(x[: max(3, len(idx) // 4)], g)
            logits = model(torch.cat([x, odd]))
            loss = F.cross_entropy(logits[: len(idx)], labels[idx])
            loss = loss + 0.5 * -F.log_softmax(logits[len(idx):], dim=1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        line = f"epoch {epoch + 1}/{epochs}: loss {total / len(images):.4f}"
        if validation is not None:
            score = accuracy(model.eval(), *validation)
            if score > best_score:
                best_score, best_state = score, copy.deepcopy(model.state_dict())
            line += f", validation accuracy {score:.2%}"
        log(line)
    if validation is not None:
        model.load_state_dict(best_state)
    return model.eval()


@torch.no_grad()
def accuracy(model: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``images`` (N, 1, 28, 28) whose predicted class equals ``labels``."""
    predictions = torch.cat([model(images[i : i + 1000]).argmax(1) for i in range(0, len(images), 1000)])
    return (predictions == labels).float().mean().item()


VALIDATION_SIZE = 5000  # training digits held out to choose the classifier's epoch


def classifier_split(dataset: str = "mnist") -> dict[str, torch.Tensor]:
    """The data the shipped classifiers learn from: images (N, 1, 28, 28) in [-1, 1]
    and labels (N,). ``train``: the training split less ``VALIDATION_SIZE`` images of a
    fixed permutation, which are ``val`` (to choose when to stop); ``test``: the test
    split, on which the accuracy is reported."""
    from . import data

    train = data.load_images(dataset, split="train")
    test = data.load_images(dataset, split="test")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(2024))
    fit, val = perm[VALIDATION_SIZE:], perm[:VALIDATION_SIZE]
    x = train.scaled()
    return {"train_x": x[fit], "train_y": train.labels[fit],
            "val_x": x[val], "val_y": train.labels[val],
            "test_x": test.scaled(), "test_y": test.labels}


def save_classifier(model: DigitClassifier, dataset: str, test_accuracy: float) -> Path:
    """Write ``model`` as the shipped classifier for ``dataset`` (float16, atomically),
    with its held-out accuracy; returns the path."""
    from .checkpoints import atomic_save

    path = weights_path(dataset)
    # float16 halves the file; the features barely move (tested via the accuracy).
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    atomic_save({"model": state, "dataset": dataset, "test_accuracy": test_accuracy}, path)
    load_classifier.cache_clear()
    return path


# ----------------------------------------------------------------------- scores
def _scorable(images: torch.Tensor, what: str) -> torch.Tensor:
    """``images`` (a tensor or NumPy array) as (N, 1, 28, 28) floats, or a ValueError
    saying how to get there: the scores of pixels on another scale are meaningless (raw
    uint8 pixels scored a distance of ten million, [0, 1] floats 0% legible) and would
    not fail otherwise."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)  # as `sample --out x.npy` writes: (N, 28, 28)
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor or NumPy array of images, got "
                         f"{type(images).__name__}")
    if images.dim() < 2 or math.prod(images.shape[1:]) != 28 * 28:
        raise ValueError(f"{what} must be 28x28 images, (N, 1, 28, 28), (N, 28, 28) or "
                         f"(N, 784); got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{what} are {images.dtype}, the metrics take floats in [-1, 1]: for "
                         "pixels 0..255, images.float() / 127.5 - 1")
    if len(images):
        low, high = images.min().item(), images.max().item()
        if low < -1.001 or high > 1.001:
            raise ValueError(
                f"{what} range over [{low:.3g}, {high:.3g}]; the metrics take [-1, 1], as "
                "the generators draw and gan_helpers.data scales (for pixels 0..255: "
                "images / 127.5 - 1; for [0, 1]: images * 2 - 1)")
        if low >= 0 and len(images) > 1:
            warnings.warn(f"none of the {len(images)} {what} has a pixel below 0: are they "
                          "in [0, 1]? The metrics take [-1, 1], with -1 for the background "
                          "(for [0, 1]: images * 2 - 1)", stacklevel=3)
    # The classifier is small and runs on the CPU, whatever device drew the images.
    return images.detach().cpu().reshape(len(images), 1, 28, 28)


@torch.no_grad()
def _probabilities(model: DigitClassifier, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([
        F.softmax(model(images[i : i + 1000].float()), dim=1) for i in range(0, len(images), 1000)
    ])


@lru_cache(maxsize=2)
def _real_reference(dataset: str) -> torch.Tensor:
    """The test split of ``dataset`` (10,000 images (N, 1, 28, 28) in [-1, 1]): what
    samples are scored against, since no GAN here trains on it."""
    from . import data

    return data.load_images(dataset, split="test").scaled()


@lru_cache(maxsize=2)
def _training_images(dataset: str) -> torch.Tensor:
    """The training split of ``dataset``, flattened: float32 (60000, 784) in [-1, 1]."""
    from . import data

    return data.load_images(dataset, split="train").scaled().flatten(1)


def frechet_distance(
    fake: torch.Tensor, real: torch.Tensor | None = None, dataset: str = "mnist"
) -> float:
    """Fréchet distance in the classifier's feature space between ``fake`` and ``real``
    images (each (N, 1, 28, 28) in [-1, 1]; ``real`` defaults to the test split).
    0 for identical distributions; needs a few hundred images of each for a stable value."""
    fake = _scorable(fake, "generated images")
    real = _real_reference(dataset) if real is None else _scorable(real, "real images")
    return _frechet_distance(fake, real, _Features(load_classifier(dataset)))


def _frechet_distance(fake: torch.Tensor, real: torch.Tensor, features: nn.Module) -> float:
    """The Fréchet distance between Gaussians fitted to ``features`` (a module with
    ``num_features``, images -> (N, num_features)) of ``fake`` and of ``real``."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if min(len(fake), len(real)) < 2:
        raise ValueError(
            f"the Fréchet distance compares two spreads of features, so it needs at least 2 "
            f"images on each side (a few hundred for a stable value); got {len(fake)} "
            f"generated and {len(real)} real"
        )
    fid = FrechetInceptionDistance(
        feature=features, input_img_size=tuple(real.shape[1:]), reset_real_features=False,
    )
    for i in range(0, len(real), 1000):
        fid.update(real[i : i + 1000].float(), real=True)
    for i in range(0, len(fake), 1000):
        fid.update(fake[i : i + 1000].float(), real=False)
    return float(fid.compute())


@torch.no_grad()
def nearest_training_distance(images: torch.Tensor, dataset: str = "mnist") -> torch.Tensor:
    """For each image (N, 1, 28, 28) in [-1, 1], the Euclidean pixel distance to its
    nearest image of the training split: float32 (N,), 0 for an exact copy."""
    train = _training_images(dataset)
    train_sq = train.square().sum(1)
    flat = _scorable(images, "images").flatten(1).float()
    nearest = []
    for chunk in flat.split(500):
        # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b, one matrix product per chunk
        sq = chunk.square().sum(1, keepdim=True) + train_sq - 2 * chunk @ train.T
        nearest.append(sq.min(1).values.clamp_min(0).sqrt())
    return torch.cat(nearest)


@lru_cache(maxsize=2)
def _test_nearest_training_distance(dataset: str) -> torch.Tensor:
    return nearest_training_distance(_real_reference(dataset), dataset)


def memorisation(images: torch.Tensor, dataset: str = "mnist") -> dict:
    """Whether ``images`` (N, 1, 28, 28) in [-1, 1] copy training digits.

    ``memorisation_ratio``: the median distance of a sample to its nearest training digit
    over the same median for the test split (about 1 for new digits; well below 1 for
    copies). ``near_copies``: the share of samples nearer to a training digit than 99%
    of test digits are (about 0.01 for new digits, 1.0 for copies)."""
    samples = nearest_training_distance(images, dataset)
    test = _test_nearest_training_distance(dataset)
    threshold = torch.quantile(test, 0.01)
    return {"memorisation_ratio": float(samples.median() / test.median()),
            "near_copies": float((samples < threshold).float().mean())}


def class_scores(images: torch.Tensor, dataset: str = "mnist") -> dict:
    """Class coverage, legibility and the Inception-Score analogue of ``images``
    (N, 1, 28, 28) in [-1, 1]."""
    return _class_scores(_scorable(images, "images"), dataset)


def _class_scores(images: torch.Tensor, dataset: str) -> dict:
    p = _probabilities(load_classifier(dataset), images)
    histogram = torch.bincount(p.argmax(1), minlength=10).float() / len(p)
    entropy = -(histogram[histogram > 0] * histogram[histogram > 0].log()).sum() / math.log(10)
    marginal = p.mean(0, keepdim=True)
    kl = (p * (p.clamp_min(1e-12).log() - marginal.clamp_min(1e-12).log())).sum(1)
    return {
        "class_histogram": [round(v, 4) for v in histogram.tolist()],
        "class_entropy": max(0.0, float(entropy)),
        "classes_missing": [c for c in range(10) if histogram[c] < MISSING_SHARE],
        "legible": float((p.max(1).values >= CONFIDENT).float().mean()),
        "inception_score": float(kl.mean().exp()),
    }


def score_images(fake: torch.Tensor, dataset: str = "mnist") -> dict:
    """All the metrics for images (N, 1, 28, 28) in [-1, 1], as one dict. (N, 28, 28)
    and (N, 784) will do too, and so will a NumPy array (``sample --out x.npy``); integer
    pixels or values outside [-1, 1] are refused with the conversion to use, and images
    with no pixel below 0 draw a warning."""
    fake = _scorable(fake, "generated images")
    features = _Features(load_classifier(dataset))
    return {"n": len(fake),
            "frechet_distance": _frechet_distance(fake, _real_reference(dataset), features),
            "frechet_floor": real_floor(dataset, min(len(fake), FLOOR_SIZE)),
            **_class_scores(fake, dataset), "legible_real": real_legible(dataset),
            **memorisation(fake, dataset)}


def score_generator(
    generator: nn.Module, n: int = 10000, seed: int = 0, dataset: str = "mnist"
) -> dict:
    """Draw ``n`` samples from ``generator`` (the noise of seed ``seed``: other seeds
    draw other samples) and score them."""
    from .checkpoints import generate

    samples = generate(generator, n, seed=seed)
    return score_images(samples, dataset)


FLOOR_SIZE = 10000  # training digits in the floor: as many as the samples scored


@lru_cache(maxsize=4)
def real_floor(dataset: str = "mnist", n: int = FLOOR_SIZE) -> float:
    """Fréchet distance between ``n`` training images (a fixed random subset) and the
    test split: what a perfect generator would score with ``n`` samples."""
    train = _training_images(dataset)
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    return frechet_distance(train[perm[:n]].view(n, 1, 28, 28), None, dataset)


@lru_cache(maxsize=4)
def real_legible(dataset: str = "mnist") -> float:
    """The share of the test split (real images no GAN saw) that the classifier labels
    with confidence >= CONFIDENT: what ``legible`` reads for real digits, in [0, 1]."""
    return _class_scores(_real_reference(dataset), dataset)["legible"]


def _distance_note(n: int) -> str:
    # The estimate is biased upwards by roughly (feature dims) / n, so a distance is only
    # comparable with one from the same n (the floor printed beside it is).
    if n < FLOOR_SIZE:
        return f"(lower is better; from {n:,} samples it reads high: compare at the same n)"
    return "(lower is better)"


def format_scores(scores: dict) -> str:
    """Scores as aligned text lines."""
    lines = [
        f"samples            {scores['n']}",
        f"frechet_distance   {scores['frechet_distance']:.2f}   {_distance_note(scores['n'])}",
        f"frechet_floor      {scores['frechet_floor']:.2f}   ({scores['n']:,} real training digits "
        "against the test split)",
        f"class_entropy      {scores['class_entropy']:.3f}   (1.0 = all ten classes equally often)",
        f"classes_missing    {scores['classes_missing'] or 'none'}",
        f"legible            {scores['legible']:.1%}   (classifier confidence >= {CONFIDENT}; "
        f"real test digits {scores['legible_real']:.1%})",
        f"inception_score    {scores['inception_score']:.2f}   (max 10)",
        f"memorisation_ratio {scores['memorisation_ratio']:.2f}   (distance to the nearest "
        "training digit, over a test digit's: about 1 = new digits, near 0 = copies)",
        f"near_copies        {scores['near_copies']:.1%}   (nearer to a training digit than "
        "99% of test digits are; about 1% for new digits)",
        "class_histogram    " + " ".join(f"{c}:{v:.2f}" for c, v in enumerate(scores["class_histogram"])),
    ]
    return "\n".join(lines)


__all__ = [
    "DigitClassifier", "load_classifier", "train_classifier", "accuracy", "frechet_distance",
    "class_scores", "score_images", "score_generator", "real_floor", "real_legible", "format_scores",
    "memorisation", "nearest_training_distance",
]