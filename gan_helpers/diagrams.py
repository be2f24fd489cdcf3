"""The course's two pictures, drawn by code: the GAN itself and DCGAN's tensor shapes.

``gan_diagram()`` draws what the seed's opening figure shows: noise z into G, G's fake
images and the real images into D, D's probability into the BCE loss against the valid
and fake labels, and which gradient reaches which network. ``dcgan_diagram()`` draws
the shapes a batch takes through ``models.DCGANGenerator`` and ``DCGANDiscriminator``,
read from the networks themselves with forward hooks, so the figure cannot drift from
the code. Both return a matplotlib Figure; ``python -m gan_helpers diagrams`` saves them
to ``images/``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .models import LATENT_DIM, DCGANDiscriminator, DCGANGenerator

_G, _D, _LOSS, _DATA = "#cfe2f3", "#f4cccc", "#fff2cc", "#d9ead3"


def _box(ax, x: float, y: float, text: str, color: str, w: float = 2.2, h: float = 1.0) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.08",
                                facecolor=color, edgecolor="#444444"))
    ax.text(x, y, text, ha="center", va="center", fontsize=9)


def _arrow(ax, start, end, color="#444444", style="-|>", dashed=False, text=None,
           text_at=None) -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(
        arrowstyle=style, color=color, lw=1.6 if dashed else 1.2,
        linestyle="--" if dashed else "-", shrinkA=2, shrinkB=2))
    if text:
        ax.text(*(text_at or ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.25)), text,
                ha="center", va="bottom", fontsize=8, color=color)


def gan_diagram():
    """The GAN of the seed: data flow (solid) and gradients (dashed). Returns a Figure."""
    from .plots import new_figure

    fig, ax = new_figure(1, (11, 4.6))
    _box(ax, 1.2, 3.0, f"noise z ~ N(0, 1)\n(N, {LATENT_DIM})", _DATA)
    _box(ax, 4.0, 3.0, "generator G", _G, w=1.8)
    _box(ax, 6.9, 3.0, "fake images G(z)\n(N, 1, 28, 28)", _DATA)
    _box(ax, 6.9, 0.9, "real images x\n(N, 1, 28, 28)", _DATA)
    _box(ax, 9.6, 2.0, "discriminator\nD", _D, w=1.9)
    _box(ax, 12.3, 2.0, "D(·) in (0, 1):\nprobability\nof real", _LOSS, w=1.8, h=1.3)
    _box(ax, 15.3, 3.2, "G's loss:\nBCE(D(G(z)), valid 1)", _G, w=2.6)
    _box(ax, 15.3, 0.8, "D's loss:\n(BCE(D(x), valid 1) +\nBCE(D(G(z).detach()), fake 0))\n/ 2",
         _D, w=3.4, h=1.5)
    _arrow(ax, (2.3, 3.0), (3.1, 3.0))
    _arrow(ax, (4.9, 3.0), (5.8, 3.0))
    _arrow(ax, (8.0, 2.9), (8.65, 2.3))
    _arrow(ax, (8.0, 1.0), (8.65, 1.7))
    _arrow(ax, (10.55, 2.0), (11.4, 2.0))
    _arrow(ax, (13.2, 2.3), (14.0, 3.0))
    _arrow(ax, (13.2, 1.7), (13.7, 1.1))
    # G's gradient runs back through D (D held fixed) into G; D's stops at detach().
    _arrow(ax, (15.0, 3.85), (4.0, 3.55), color="#1155cc", dashed=True,
           text="G's step: the gradient flows back through D into G; only G's weights move",
           text_at=(9.5, 3.9))
    _arrow(ax, (14.2, 0.05), (9.8, 1.45), color="#cc0000", dashed=True,
           text="D's step: the fake batch is detached,\nso D's gradient stops at D",
           text_at=(11.6, -0.35))
    ax.set_xlim(-0.2, 17.2)
    ax.set_ylim(-0.6, 4.6)
    ax.set_axis_off()
    ax.set_title("A GAN: G and D take turns, each with its own loss, zero_grad and step",
                 fontsize=11)
    return fig


def shape_walk(model: nn.Module, x: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """The (layer name, output shape without the batch) of each convolution and of the
    network's output, for input ``x``: [("input", (C, H, W)), ("ConvTranspose2d", ...)]."""
    walk = [("input", tuple(x.shape[1:]))]

    def record(module, inputs, output):
        walk.append((type(module).__name__, tuple(output.shape[1:])))

    hooks = [m.register_forward_hook(record) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            was_training = model.training
            out = model.eval()(x)
            model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    if tuple(out.shape[1:]) != walk[-1][1]:  # D's view (N, 1, 1, 1) -> (N, 1)
        walk.append(("output", tuple(out.shape[1:])))
    return walk


def _row(ax, y: float, walk: list, title: str, color: str) -> None:
    ax.text(-1.1, y, title, ha="right", va="center", fontsize=12, fontweight="bold")
    x = 0.0
    for i, (name, shape) in enumerate(walk):
        side = shape[-1] if len(shape) == 3 else 1
        h = 0.25 + 1.6 * side / 28
        label = " x ".join(map(str, shape))
        _box(ax, x, y, label, color if name not in ("input", "output") else _DATA, w=1.5, h=h)
        if name not in ("input", "output"):
            ax.text(x, y - h / 2 - 0.2, name, ha="center", va="top", fontsize=7)
        if i:
            _arrow(ax, (x - 1.55, y), (x - 0.8, y))
        x += 2.3


def dcgan_diagram(width: int = 32, d_width: int = 16):
    """DCGAN's shapes, generator and discriminator, as the course's models compute them
    (``width`` and ``d_width`` as in the course DCGAN recipe). Returns a Figure."""
    from .plots import new_figure

    g, d = DCGANGenerator(width=width), DCGANDiscriminator(width=d_width)
    g_walk = shape_walk(g, torch.zeros(2, LATENT_DIM))
    g_walk[0] = ("input", (LATENT_DIM, 1, 1))  # G views z (N, 100) as (N, 100, 1, 1)
    d_walk = shape_walk(d, torch.zeros(2, 1, 28, 28))
    fig, ax = new_figure(1, (12, 4.8))
    _row(ax, 3.2, g_walk, "G", _G)
    _row(ax, 0.6, d_walk, "D", _D)
    ax.text(5.6, 4.6, "transposed convolutions up: BatchNorm and ReLU between, tanh at the end",
            ha="center", fontsize=9)
    ax.text(5.6, -1.2, "strided convolutions down (no pooling): LeakyReLU, BatchNorm in the middle, "
            "sigmoid at the end", ha="center", fontsize=9)
    ax.set_xlim(-1.9, 2.3 * max(len(g_walk), len(d_walk)) - 1.2)
    ax.set_ylim(-1.5, 4.9)
    ax.set_axis_off()
    ax.set_title(f"DCGAN, channels x height x width (G width {width}, D width {d_width}): "
                 "no fully connected layer", fontsize=11)
    return fig


def save_diagrams(folder: str | Path = "images") -> list[Path]:
    """Write gan_diagram.png and dcgan_diagram.png into ``folder``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in (("gan_diagram.png", gan_diagram), ("dcgan_diagram.png", dcgan_diagram)):
        fig = draw()
        fig.savefig(folder / name, dpi=90, bbox_inches="tight")
        paths.append(folder / name)
    return paths
