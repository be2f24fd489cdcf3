"""What a training run is: the recipes and ``TrainConfig``, validated in one place.

Each training choice of the recipes lives here once; ``python -m gan_helpers train
--help`` and the notebooks read it from here. What each course value buys, and the run
that measured it, is the first table of bench/RESULTS.md.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields

import torch

from .data import DATASET_NAMES
from .losses import LOSS_NAMES, uses_logits
from .models import LATENT_DIM, MODEL_NAMES, build_models

RECIPES = ("course", "seed")
SEED_EPOCHS = 300  # the seed's run length (its gan.py defaults to 200)
# The training choices that differ between recipes. A TrainConfig field left at None
# takes its value from here. Each course value's comment gives its measured effect
# (bench/RESULTS.md, first table, links the runs).
SEED_RECIPE = {"batch_size": 64, "lr": 0.0002, "g_lr_factor": 1.0, "b1": 0.5, "b2": 0.999,
               "g_batchnorm": False, "ema": 0.0, "augment": 0, "augment_ramp": 0, "r1": 0.0}
COURSE_FC = {  # at 120 s, FD 24.9 with every choice; without each one, in turn:
    "batch_size": 128,     # FD 36.5 at the seed's 64
    "lr": 0.0005,          # FD 28.8 at the seed's 0.0002
    "g_lr_factor": 2.0,    # FD 29.4 with G's lr equal to D's
    "b1": 0.0,             # FD 39.0 at the seed's 0.5 (StyleGAN and BigGAN train with 0)
    "b2": 0.999,
    "g_batchnorm": True,   # FD 324 without: digits go missing
    "ema": 0.9999,         # FD 164 without: samples from a weight average of G
    "augment": 0,          # off at 120 s: FD 16.5 without, 24.9 with (long runs need it)
    "augment_ramp": 0,
    "r1": 0.0,
}
COURSE_DCGAN = {  # at 300 s, FD 13.7 (G's lr then doubled); each choice set back:
    **COURSE_FC,           # b1 0: FD 27.1 at 0.5; ema: FD 31.0 without
    "batch_size": 64,      # the paper's and the seed's
    "lr": 0.001,           # FD 27.2 at the seed's 0.0002
    "g_lr_factor": 1.0,    # doubling G's lr bought nothing here: FD 14.1 without
    "r1": 0.5,             # FD 64.3 without
}  # and D at half G's width (TrainConfig.d_width): FD 16.9 at G's width
# Lazy regularisation (Karras et al. 2020, StyleGAN2): the R1 penalty every 16 steps,
# weighted 16 times, costs a sixteenth of the work for about the same effect.
R1_EVERY = 16


def _option(help: str, default=None, **cli) -> field:
    """A TrainConfig field with the help text ``python -m gan_helpers train`` shows for
    it; ``cli`` holds argparse extras (``aliases``, ``metavar``, ``check``, ``choices``)."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass
class TrainConfig:
    """Everything that defines a run; saved in every checkpoint.

    ``TrainConfig()`` is the course FC recipe, ``TrainConfig(model="dcgan")`` the course
    DCGAN recipe and ``TrainConfig(recipe="seed")`` the seed's gan.py. A field left at
    None takes its recipe's value (``SEED_RECIPE``, ``COURSE_FC``, ``COURSE_DCGAN``); a
    value given explicitly always wins. The seed's options keep the seed's names.
    """

    model: str = _option("fc: the seed's fully connected GAN; dcgan: the convolutional one",
                         "fc", choices=MODEL_NAMES)
    dataset: str = _option("the images to learn", "mnist", choices=DATASET_NAMES)
    recipe: str = _option("course: the in-memory loop with the course's choices; seed: gan.py "
                          "exactly (DataLoader + transforms, 300 epochs)", "course", choices=RECIPES)
    batch_size: int | None = _option("images per batch", aliases=["--batch_size"], check="positive")
    lr: float | None = _option("Adam learning rate of D, and of G times --g-lr-factor", check="positive")
    g_lr_factor: float | None = _option("G's lr is F times --lr", metavar="F", check="positive")
    b1: float | None = _option("Adam beta1")
    b2: float | None = _option("Adam beta2")
    latent_dim: int = _option("noise size", LATENT_DIM, aliases=["--latent_dim"], check="positive")
    loss: str = _option("bce: sigmoid in D + BCELoss (the seed's); bce-logits: "
                        "BCEWithLogitsLoss, no sigmoid", "bce", choices=LOSS_NAMES)
    g_batchnorm: bool | None = _option("BatchNorm in the FC generator's hidden layers")
    width: int = _option("DCGAN channel multiplier of G, ngf (pytorch/examples: 64)", 32,
                         check="positive")
    d_width: int | None = _option("DCGAN channel multiplier of D, ndf (course DCGAN: half of "
                                  "--width, which costs D less than half the time; otherwise "
                                  "--width)", check="positive")
    ema: float | None = _option("sample from a moving average of G's weights with this decay "
                                "(0: off, G itself)")
    # 0.1: FD 15.9 at 6,400 steps; 0.05 and 0.2: 18.0 and 16.9 (bench/RESULTS.md, the ramp-up)
    ema_rampup: float = _option("the weight average's mean age is SHARE of the steps so far "
                                "(0.5: all steps about alike) until it spans about 1/(1-ema) "
                                "steps; in (0, 0.5]", 0.1, metavar="SHARE")
    augment: int | None = _option("D sees real and fake images moved by up to PIXELS pixels "
                                  "(DiffAugment's translation; 0: off)", metavar="PIXELS",
                                  check="nonnegative")
    augment_ramp: int | None = _option("start D's shifts at 1 pixel and widen them by 1 every "
                                       "STEPS steps up to --augment (0: the full shift at once)",
                                       metavar="STEPS", check="nonnegative")
    decay_start: int = _option("step where the lr starts falling (with --decay-steps)", 0,
                               metavar="STEP", check="nonnegative")
    decay_steps: int = _option("the lr falls linearly to 0 over N steps from --decay-start, "
                               "and training stops there (CycleGAN's schedule; 0: constant, "
                               "as in the seed)", 0, metavar="N", check="nonnegative")
    label_smoothing: float = _option("D's target for real images is 1 - S (one-sided label "
                                     "smoothing; 0: the seed's 1)", 0.0, metavar="S")
    r1: float | None = _option("every 16 steps, one more D step towards a score that is flat "
                               "around real images, with weight GAMMA (the R1 penalty, "
                               "Mescheder et al. 2018; 0: off)", metavar="GAMMA")
    seed: int = _option("random seed: the same seed and steps give the same images", 0,
                        check="seed")
    sample_interval: int = _option("steps between saved sample grids", 400,
                                   aliases=["--sample_interval"], check="positive")
    n_samples: int = field(default=64)  # images in each saved grid

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}: choose one of {', '.join(RECIPES)}")
        for name, value in recipe_defaults(self.recipe, self.model).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self._check_types()
        if self.d_width is None:
            halve = self.recipe == "course" and self.model == "dcgan"
            self.d_width = max(1, self.width // 2) if halve else self.width

    @classmethod
    def for_recipe(cls, recipe: str = "course", **overrides) -> "TrainConfig":
        """``TrainConfig(recipe=recipe, **overrides)``, checked by ``validate``."""
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
        if not 0.0 < self.ema_rampup <= 0.5:
            raise ValueError(f"ema_rampup must be in (0, 0.5], got {self.ema_rampup}")
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
        # The same for ``r1``: checkpoints from before it trained without the penalty;
        # and before ``ema_rampup``, the average's ramp-up was a tenth.
        values = {"augment": 0, "augment_ramp": 0, "g_lr_factor": 1.0, "r1": 0.0,
                  "ema_rampup": 0.1, **values}
        # Before ``d_width``, a DCGAN's discriminator was as wide as its generator.
        values.setdefault("d_width", values.get("width", cls.width))
        return cls(**{k: v for k, v in values.items() if k in known})


def recipe_defaults(recipe: str, model: str) -> dict:
    """The values a TrainConfig field left at None takes for ``recipe`` and ``model``."""
    if recipe == "seed":
        return SEED_RECIPE
    return COURSE_DCGAN if model == "dcgan" else COURSE_FC


def recipe_values(name: str) -> str:
    """Each recipe's value of field ``name``, for help texts: "seed: 64; course FC: 128;
    course DCGAN: 64", or "" for a field the recipes do not set."""
    if name not in SEED_RECIPE:
        return ""
    values = {"seed": SEED_RECIPE[name], "course FC": COURSE_FC[name],
              "course DCGAN": COURSE_DCGAN[name]}
    if len(set(values.values())) == 1:
        return f"all recipes: {SEED_RECIPE[name]}"
    return "; ".join(f"{label}: {value}" for label, value in values.items())


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


def resume_device(asked: str | None, trained_on: str = "cpu") -> torch.device:
    """Where a resumed run trains: ``asked`` if given, else the kind of device it was
    trained on (``trained_on``: "cpu", "cuda" or "mps") where this machine has one, else
    the CPU, so a GPU run stays on the GPU."""
    if asked is not None:
        return resolve_device(asked)
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    return resolve_device(trained_on if available.get(trained_on) else "cpu")
