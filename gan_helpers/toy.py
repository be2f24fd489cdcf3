"""A GAN in two dimensions: the seed's game played on points, fast enough to watch.

The real data is a ring of eight Gaussians (``ring``); G and D are small MLPs
(``toy_models``); each step is the course's ``step.train_step``, on D's logits with
``BCEWithLogitsLoss``. ``ToyRun.fit`` trains and calls hooks such as ``LiveDashboard``
with ``picture=ToyRun.picture``: the real points, G's points and D's probability of
"real" over the plane. ``modes_covered`` counts the modes G's points reach, which shows
mode collapse (G drawing a few modes only) in one number.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import nn

from .step import train_step
from .trainer import TrainEvent
from .checkpoints import HISTORY_KEYS

MODES, RADIUS, SPREAD = 8, 2.0, 0.05  # the ring: 8 modes at radius 2, std 0.05 each


def ring(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` points of the ring of ``MODES`` Gaussians: float32 (n, 2), each mode
    equally likely, centred at radius ``RADIUS`` with standard deviation ``SPREAD``."""
    mode = torch.randint(MODES, (n,), generator=generator)
    angle = 2 * math.pi * mode / MODES
    centres = RADIUS * torch.stack([angle.cos(), angle.sin()], dim=1)
    return centres + SPREAD * torch.randn(n, 2, generator=generator)


def modes_covered(points: torch.Tensor, min_share: float = 0.25) -> int:
    """How many of the ring's modes ``points`` (N, 2) reach: a mode counts when at least
    ``min_share`` of its fair share (N / MODES) of the points lies within 4 standard
    deviations of its centre."""
    angle = 2 * math.pi * torch.arange(MODES) / MODES
    centres = RADIUS * torch.stack([angle.cos(), angle.sin()], dim=1)
    distance = torch.cdist(points.float(), centres)  # (N, MODES)
    near, mode = distance.min(dim=1)
    counts = torch.bincount(mode[near < 4 * SPREAD], minlength=MODES)
    return int((counts >= min_share * len(points) / MODES).sum())


class MinibatchStd(nn.Module):
    """Appends one feature to each row: the mean, over features, of the standard
    deviation across the batch (Karras et al. 2018). A batch of fakes that all sit on
    one mode has a tell-tale small spread, which D can then see and punish."""

    mixes_batch = True  # train_step then scores real and fake batches apart

    def __init__(self) -> None:
        super().__init__()
        self.fixed_spread: torch.Tensor | None = None  # set while drawing D's surface
        self.last_spread: torch.Tensor | None = None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        spread = h.std(dim=0, unbiased=False).mean() if self.fixed_spread is None \
            else self.fixed_spread
        self.last_spread = spread.detach()
        return torch.cat([h, spread.expand(h.shape[0], 1)], dim=1)


def toy_models(latent_dim: int = 2, hidden: int = 128,
               minibatch_std: bool = False) -> tuple[nn.Module, nn.Module]:
    """G: noise (N, latent_dim) -> points (N, 2); D: points (N, 2) -> logits (N, 1).
    Both MLPs with two hidden layers of ``hidden`` units (ReLU in G, LeakyReLU(0.2) in
    D); ``minibatch_std`` gives D the batch's spread as one more feature."""
    g = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                      nn.ReLU(), nn.Linear(hidden, 2))
    g.latent_dim = latent_dim
    d_layers = [nn.Linear(2, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                nn.LeakyReLU(0.2)]
    if minibatch_std:
        d_layers.append(MinibatchStd())
    d = nn.Sequential(*d_layers, nn.Linear(hidden + minibatch_std, 1))
    return g, d


class ToyRun:
    """One 2-D GAN run: G, D, their Adam optimizers and the history of the four numbers
    (G's and D's losses, mean D(x) and D(G(z))), as a ``GANTrainer`` keeps them."""

    def __init__(self, seed: int = 0, lr: float = 1e-3, betas: tuple[float, float] = (0.5, 0.999),
                 batch_size: int = 256, latent_dim: int = 2, hidden: int = 128,
                 minibatch_std: bool = False) -> None:
        torch.manual_seed(seed)
        self.generator, self.discriminator = toy_models(latent_dim, hidden, minibatch_std)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=betas)
        self.criterion = nn.BCEWithLogitsLoss()
        self.batch_size = batch_size
        self.rng = torch.Generator().manual_seed(seed)
        self.fixed_noise = torch.randn(1000, latent_dim, generator=self.rng)
        self.step = 0
        self.history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
        self.interrupted = False
        self.config = None  # no data set: the dashboard's digit report does not apply

    def fit(self, steps: int, hooks: Iterable[Callable[[TrainEvent], None]] = (),
            hook_every: int = 20) -> "ToyRun":
        """Train ``steps`` more steps, calling each hook every ``hook_every`` steps and
        once more at the end (``event.final``)."""
        hooks = list(hooks)
        event = None
        for _ in range(steps):
            real = ring(self.batch_size, self.rng)
            z = torch.randn(self.batch_size, self.generator.latent_dim, generator=self.rng)
            stats = train_step(self.generator, self.discriminator, self.opt_g, self.opt_d,
                               self.criterion, real, z)
            self.step += 1
            values = [float(getattr(stats, key)) for key in HISTORY_KEYS]
            for key, value in zip(HISTORY_KEYS, values):
                self.history[key].append(value)
            event = TrainEvent(self, self.step, 0.0, *values)
            if self.step % hook_every == 0:
                for hook in hooks:
                    hook(event)
        if event is not None:
            event.final = True
            for hook in hooks:
                hook(event)
        return self

    @torch.no_grad()
    def samples(self) -> torch.Tensor:
        """G's points for a fixed batch of 1,000 noise vectors: (1000, 2)."""
        return self.generator(self.fixed_noise)

    @torch.no_grad()
    def score_points(self, points: torch.Tensor) -> torch.Tensor:
        """D's logits (N, 1) for ``points`` (N, 2), each scored as D scores a point of
        one of G's batches: with a minibatch std layer, its spread feature is that of a
        batch of G's points, not that of ``points``."""
        layers = [m for m in self.discriminator.modules() if isinstance(m, MinibatchStd)]
        if not layers:
            return self.discriminator(points)
        self.discriminator(self.samples()[: self.batch_size])  # records G's batch spread
        for layer in layers:
            layer.fixed_spread = layer.last_spread
        try:
            return self.discriminator(points)
        finally:
            for layer in layers:
                layer.fixed_spread = None

    def draw(self, ax):
        """Real points, G's points and D's probability of "real" over the plane, on
        ``ax``; returns the probability's contour set (for a colour bar)."""
        lim = RADIUS + 1.2
        grid = torch.linspace(-lim, lim, 120)
        xx, yy = torch.meshgrid(grid, grid, indexing="xy")
        with torch.no_grad():
            p = torch.sigmoid(self.score_points(torch.stack([xx.flatten(), yy.flatten()], 1)))
        surface = ax.contourf(xx.numpy(), yy.numpy(), p.view(120, 120).numpy(),
                              levels=torch.linspace(0, 1, 11).tolist(), cmap="RdBu", alpha=0.6)
        real = ring(1000, torch.Generator().manual_seed(1))
        fake = self.samples()
        ax.scatter(real[:, 0], real[:, 1], s=3, c="black", label="real")
        ax.scatter(fake[:, 0], fake[:, 1], s=3, c="#e69500", label="G(z)")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(f"step {self.step}: {modes_covered(fake)} of {MODES} modes", fontsize=10)
        ax.legend(loc="upper right", fontsize=7, markerscale=3)
        return surface

    def picture(self, event=None) -> bytes:
        """``draw`` as PNG bytes: the dashboard's ``picture``."""
        from .plots import figure_png, new_figure

        fig, ax = new_figure(1, (4, 4))
        surface = self.draw(ax)
        fig.colorbar(surface, ax=ax, fraction=0.046, pad=0.04, label="D(x)")
        fig.tight_layout()
        return figure_png(fig, dpi=72)
