"""Static figures (matplotlib, off-screen): sample grids, loss curves, early vs late.

Each function returns a matplotlib Figure or writes a PNG; the live dashboard and the
trainer both draw through here so a saved picture and a live one look the same.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

if TYPE_CHECKING:  # matplotlib loads only when a figure is drawn
    import numpy as np
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def new_figure(ncols: int = 1, figsize: tuple[float, float] = (4, 4)) -> tuple[Figure, Any]:
    """A (figure, axes) pair built without pyplot: no global state and no GUI backend,
    so it works the same in a script, in CI and in a kernel thread. ``axes`` is one Axes
    for ``ncols`` 1, else an array of ``ncols`` of them."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    axes = fig.subplots(1, ncols)
    return fig, axes


def grid_image(
    images: torch.Tensor | np.ndarray | Sequence[torch.Tensor], nrow: int = 8
) -> torch.Tensor:
    """images (N, 1, 28, 28) in [-1, 1] -> one grid (3, H, W) in [0, 1], via
    torchvision's ``make_grid``. (N, 28, 28) and (N, 784) will do too, and so will raw
    integer pixels 0..255 (uint8, as ``gan_helpers.data`` loads them), a NumPy array (as
    ``sample --out FILE.npy`` writes) or a list of images, so any batch of digits in the
    course can be looked at as it is."""
    from torchvision.utils import make_grid

    from .data import to_unit_range

    images = _image_batch(images)
    if images.dim() == 2:  # (N, 784)
        images = images.view(-1, 1, 28, 28)
    elif images.dim() == 3:  # (N, H, W): make_grid would take N for channels
        images = images.unsqueeze(1)
    if not images.is_floating_point():
        images = to_unit_range(images[:, 0])  # the data's own scaling, 0..255 -> [-1, 1]
    return make_grid(images, nrow=nrow, normalize=True, value_range=(-1, 1))


def _image_batch(images: torch.Tensor | np.ndarray | Sequence[torch.Tensor]) -> torch.Tensor:
    """``images`` as a CPU tensor of a layout ``grid_image`` draws, else a ValueError
    that names the shape it got and the ones it takes."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("no images to draw: the list is empty")
        try:
            images = torch.stack([torch.as_tensor(image) for image in images])
        except RuntimeError as err:  # "stack expects each tensor to be equal size, ..."
            raise ValueError(f"the images in the list differ in shape: {err}") from None
        if images.dim() == 5 and images.shape[1] == 1:  # a list of (1, 1, 28, 28) batches
            images = images[:, 0]
    images = torch.as_tensor(images).detach().cpu()
    shape = tuple(images.shape)
    if images.dtype == torch.bool:
        raise ValueError("cannot draw bool images: give pixels as floats in [-1, 1] or "
                         "integers 0..255")
    integer = not images.is_floating_point()
    if integer and images.numel() and (images.min() < 0 or images.max() > 255):
        raise ValueError(f"integer pixels must lie in 0..255, these span {images.min().item()}"
                         f"..{images.max().item()}; give floats in [-1, 1] instead")
    drawable = (images.dim() == 3
                or (images.dim() == 2 and shape[1] == 28 * 28)
                or (images.dim() == 4 and (shape[1] == 1 or (shape[1] == 3 and not integer))))
    if not drawable:
        single = " (one image needs a batch axis: x.unsqueeze(0))" if shape == (28, 28) else ""
        raise ValueError(f"cannot draw images of shape {shape}: give a batch (N, 1, 28, 28), "
                         f"(N, 28, 28) or (N, 784){single}")
    if shape[0] == 0:
        raise ValueError(f"no images to draw: the batch {shape} is empty")
    return images


def show_grid(
    images: torch.Tensor | np.ndarray | Sequence[torch.Tensor],
    title: str = "",
    nrow: int = 8,
    ax: Axes | None = None,
) -> Figure:
    """Draw a grid of images (N, 1, 28, 28) in [-1, 1] on ``ax`` (a new figure if None);
    any layout ``grid_image`` takes will do."""
    if ax is None:
        _, ax = new_figure()
    ax.imshow(grid_image(images, nrow).permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    return ax.figure


def plot_history(
    history: Mapping[str, Sequence[float]],
    axes: Sequence[Axes] | None = None,
    smooth: int = 50,
    max_points: int = 1000,
) -> Figure:
    """Loss curves (G and D, with the log 2 equilibrium line) and mean D(x), D(G(z))
    (with the 0.5 line) against the step. ``history`` has the trainer's keys
    g_loss, d_loss, d_real, d_fake; curves are running means over the last ``smooth``
    steps (over all steps so far, before there are that many, so a curve starts at
    step 1 and a live view is never blank), drawn through at most ``max_points`` evenly
    spaced points (the first and the last included), so a long run draws as fast as a
    short one."""
    import math

    if axes is None:
        _, axes = new_figure(2, (9, 3))
    ax_loss, ax_d = axes
    for ax in axes:
        ax.clear()
    steps = len(history["g_loss"])
    for key, label, ax in (
        ("g_loss", "G loss", ax_loss), ("d_loss", "D loss", ax_loss),
        ("d_real", "D(x)", ax_d), ("d_fake", "D(G(z))", ax_d),
    ):
        values = torch.tensor(history[key], dtype=torch.float64)
        if len(values) == 0:
            continue
        k = max(1, smooth)
        sums = torch.cat([values.new_zeros(1), values.cumsum(0)])
        at = torch.arange(1, len(values) + 1)
        smoothed = (sums[at] - sums[(at - k).clamp(min=0)]) / at.clamp(max=k)
        if len(at) > max_points:
            keep = torch.linspace(0, len(at) - 1, max_points).round().long()
            at, smoothed = at[keep], smoothed[keep]
        ax.plot(at.numpy(), smoothed.numpy(), label=label, marker="." if len(at) == 1 else "")
    ax_loss.axhline(math.log(2), color="gray", ls="--", lw=0.8, label="log 2")
    ax_d.axhline(0.5, color="gray", ls="--", lw=0.8, label="0.5")
    ax_d.set_ylim(0, 1)
    ax_loss.set_title("losses")
    ax_d.set_title("mean discriminator output")
    for ax in axes:
        ax.set_xlabel(f"step (of {steps})")
        ax.legend(loc="best", fontsize=8)  # off the curves, wherever they run
    return ax_loss.figure


def early_vs_late(early: str | os.PathLike, late: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Put two saved grid PNGs side by side, each labelled with its step, as the seed's
    comparison of early and late samples; writes ``out`` (a small grayscale PNG)."""
    from PIL import Image, ImageDraw

    pictures = [Image.open(p).convert("L") for p in (early, late)]
    label_h, gap = 18, 12
    width = sum(p.width for p in pictures) + gap
    canvas = Image.new("L", (width, max(p.height for p in pictures) + label_h), 255)
    draw = ImageDraw.Draw(canvas)
    x = 0
    for picture, path, what in zip(pictures, (early, late), ("early", "late")):
        canvas.paste(picture, (x, label_h))
        step = Path(path).stem.replace("step_", "").lstrip("0") or "0"
        draw.text((x + 2, 3), f"{what}: step {step}", fill=0)
        x += picture.width + gap
    canvas = canvas.resize((canvas.width * 2, canvas.height * 2), Image.NEAREST)
    canvas.save(out)
    return Path(out)


def training_film(grids: Sequence[str | os.PathLike], out: str | os.PathLike,
                  frame_ms: int = 250, max_frames: int = 60) -> Path:
    """An animated GIF of a run's fixed-noise grids (``trainer.saved_grids``, the
    ``step_*.png`` files), each frame labelled with its step, the last one held longer;
    at most ``max_frames`` frames, evenly spaced, first and last kept. Writes ``out``."""
    from PIL import Image, ImageDraw

    grids = [Path(p) for p in grids]
    if not grids:
        raise ValueError("no grids to make a film of: train with an out_dir first "
                         "(the trainer saves one grid every sample_interval steps)")
    if len(grids) > max_frames:
        picks = sorted({round(i * (len(grids) - 1) / (max_frames - 1)) for i in range(max_frames)})
        grids = [grids[i] for i in picks]
    frames = []
    for path in grids:
        picture = Image.open(path).convert("L")
        frame = Image.new("L", (picture.width, picture.height + 18), 255)
        frame.paste(picture, (0, 18))
        step = path.stem.replace("step_", "").lstrip("0") or "0"
        ImageDraw.Draw(frame).text((2, 3), f"step {step}", fill=0)
        frames.append(frame)
    durations = [frame_ms] * (len(frames) - 1) + [frame_ms * 8]
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return Path(out)


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """A matplotlib figure as PNG bytes (for an ipywidgets Image)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
