"""What the tests of config, step, trainer and checkpoints share: small configs, weight
snapshots and optimizer spies."""


import torch

from gan_helpers.models import build_models
from gan_helpers.config import TrainConfig


def small(model="fc", **kw):
    kw.setdefault("batch_size", 64)
    if model == "dcgan":
        kw.setdefault("width", 8)
    return TrainConfig.for_recipe(kw.pop("recipe", "course"), model=model, **kw)


class Spy:
    """Wraps an optimizer and runs a callback just before each step."""

    def __init__(self, opt, before_step):
        self.opt, self.before_step = opt, before_step

    def zero_grad(self, set_to_none=True):
        self.opt.zero_grad(set_to_none=set_to_none)

    def step(self):
        self.before_step()
        self.opt.step()


def models_and_opts(model="fc"):
    torch.manual_seed(0)
    g, d = build_models(model, width=8)
    og = torch.optim.Adam(g.parameters(), lr=1e-3)
    od = torch.optim.Adam(d.parameters(), lr=1e-3)
    return g, d, og, od


def params(trainer):
    return [t.clone() for t in list(trainer.generator.state_dict().values())
            + list(trainer.discriminator.state_dict().values())
            + list(trainer.sampler.state_dict().values())]
