"""Live views for notebooks: a training dashboard and a latent-space explorer.

The dashboard is a hook for ``GANTrainer.fit``. Training runs in the cell itself, never
inside an ``ipywidgets.Output`` context (which would swallow exceptions and turn the
widget's text into the cell's output). The widgets are updated in place at most
``updates_per_second`` times a second so the kernel spends its time training; when the
run ends, or is interrupted from the kernel menu, the dashboard is replaced by a static
PNG of its last state, so an executed or saved notebook still shows the result.

    dash = LiveDashboard()
    trainer.fit(seconds=120, hooks=[dash])

A loop written out by hand feeds the same dashboard through a ``LoopLog``:

    log, dash = LoopLog(generator), LiveDashboard("my loop")
    for step, (real, _) in enumerate(loader, 1):
        ...  # G's step, then D's
        dash(log.record(step, g_loss, d_loss, d_real, d_fake))
    dash(log.record(step, g_loss, d_loss, d_real, d_fake, final=True))
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Callable

import torch

from .models import device_of, noise_size
from .plots import figure_png, grid_image, new_figure, plot_history

if TYPE_CHECKING:  # ipywidgets loads only when a widget is built
    import ipywidgets as widgets


def _jupyter_kernel() -> bool:
    """Whether this runs in a Jupyter kernel, where a front end can show widgets. In a
    plain ``python`` process, ``display`` would print each widget's repr instead."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


TEXT_INTERVAL = 10.0  # seconds between status lines outside Jupyter


def _grid_png(images: torch.Tensor, scale: int = 2) -> bytes:
    """images (N, 1, 28, 28) in [-1, 1] -> PNG bytes of their grid, upscaled for screens."""
    import io

    from PIL import Image

    grid = grid_image(images)
    array = (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    picture = Image.fromarray(array)
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()


def _samples_png(event) -> bytes:
    """The dashboard's default picture: the grid of G's fixed-noise samples, as PNG."""
    return _grid_png(event.samples())


# Before this many steps, samples that all look alike are a G that has not learnt yet;
# after it, a healthy run draws every digit (bench/RESULTS.md, "The collapse warning").
COLLAPSE_STEPS = 1000


def probe_noise(latent_dim: int) -> torch.Tensor:
    """The dashboard's fixed probe noise: shape (256, latent_dim), N(0, 1), seed 1234."""
    return torch.randn(256, latent_dim, generator=torch.Generator().manual_seed(1234))


def probe_classes(trainer, noise: torch.Tensor) -> dict:
    """``metrics.class_scores`` of ``trainer.sampler`` on ``noise`` (N, latent_dim), drawn
    in eval mode; the sampler's mode is restored. Raises FileNotFoundError where the
    classifier's weights are not shipped."""
    from .metrics import class_scores

    sampler = trainer.sampler
    was_training = sampler.training
    sampler.eval()
    try:
        with torch.no_grad():
            samples = sampler(noise.to(trainer.device)).cpu()
    finally:
        sampler.train(was_training)
    return class_scores(samples)


class LiveDashboard:
    """Samples from a fixed noise batch, the G and D loss curves, and mean D(x) and
    D(G(z)) with the 0.5 line, updated while ``GANTrainer.fit`` runs.

    Pass it in ``hooks=[...]``; it shows itself on the first update. ``title`` heads
    the dashboard; ``updates_per_second`` throttles redraws (about 2 by default), and
    ``max_draw_share`` keeps drawing to at most that share of the wall time (0.2 by
    default: a redraw costs 0.1-0.3 s of CPU that training would otherwise get, so
    unbounded it could halve the steps of a run).
    With ``classes=True`` (the default; it applies to MNIST runs, of any latent size) it
    also shows which digits 256 fixed samples look like, and warns in plain words when
    a digit has vanished from them or, past ``COLLAPSE_STEPS``, when they all look alike
    (mode collapse). Outside Jupyter (a script run with
    ``python``) it prints a status line every ``TEXT_INTERVAL`` seconds instead.
    ``picture``, a function of the event that returns PNG bytes, replaces the grid of
    samples (the 2-D toy GAN draws its points and D's surface with it).
    """

    def __init__(
        self, title: str = "Training", updates_per_second: float = 2.0, classes: bool = True,
        max_draw_share: float = 0.2, picture: Callable[[Any], bytes] | None = None,
    ) -> None:
        import ipywidgets as widgets

        if not 0 < max_draw_share <= 1:
            raise ValueError(f"max_draw_share must be in (0, 1], got {max_draw_share}")
        if not 0 < updates_per_second < math.inf:
            raise ValueError(f"updates_per_second must be a positive number (about 2 keeps "
                             f"the kernel responsive), got {updates_per_second}")
        self.title = title
        self.picture = picture or _samples_png
        self.min_interval = 1.0 / updates_per_second
        self.max_draw_share = max_draw_share
        self._draw_cost = 0.0
        self.classes = classes
        self._class_noise: torch.Tensor | None = None  # drawn for the run's latent size
        self.status = widgets.HTML(f"<b>{title}</b>: waiting for the first step")
        self.class_view = widgets.HTML()
        self.grid = widgets.Image(format="png", layout=widgets.Layout(width="300px"))
        self.curves = widgets.Image(format="png", layout=widgets.Layout(width="620px"))
        # Hidden until the first drawing: an Image without a picture shows a broken icon.
        self._row = widgets.HBox([self.grid, self.curves], layout=widgets.Layout(display="none"))
        self.widget = widgets.VBox([self.status, self._row, self.class_view])
        self._figure, self._axes = new_figure(2, (8, 2.8))
        self._handle = None
        self._last = -math.inf
        self.updates = 0
        self._text_only: bool | None = None  # decided at the first step

    def _display(self) -> None:
        from IPython.display import display

        self._handle = display(self.widget, display_id=True)

    def due(self, now: float) -> bool:
        """Whether a redraw may start at time ``now`` (``time.monotonic()`` seconds):
        at least ``1 / updates_per_second`` after the last one started, and late enough
        that drawing takes at most ``max_draw_share`` of the time in between."""
        wait = max(self.min_interval, self._draw_cost / self.max_draw_share)
        return now - self._last >= wait

    def __call__(self, event) -> None:
        """The hook: redraw when ``due`` (and always at the end of a run)."""
        now = time.monotonic()
        if self._text_only is None:
            self._text_only = not _jupyter_kernel()
            if self._text_only:
                print(f"{self.title}: no Jupyter kernel here, so the dashboard prints its "
                      f"status every {TEXT_INTERVAL:.0f} s instead of drawing it.")
        if self._text_only:
            if event.final or now - self._last >= TEXT_INTERVAL:
                self._last = now
                print(f"{self.title}: " + self._status_text(event).replace(" &nbsp;", ","))
            return
        if not event.final and not self.due(now):
            return
        self._last = now
        if self._handle is None:
            self._display()
        trainer = event.trainer
        self.status.value = f"<b>{self.title}</b>: " + self._status_text(event)
        self.grid.value = self.picture(event)
        plot_history(trainer.history, axes=self._axes)
        if self.updates % 10 == 0:  # the layout barely moves between redraws
            self._figure.tight_layout()
        self.curves.value = figure_png(self._figure)
        self._row.layout.display = None
        if self.classes:
            self.class_view.value = self._class_report(trainer, event.step)
        self.updates += 1
        self._draw_cost = time.monotonic() - now
        if event.final:
            self.freeze(event)

    @staticmethod
    def _status_text(event) -> str:
        epoch = f" (epoch {event.epoch:.1f})" if getattr(event.trainer, "config", None) else ""
        return (
            f"step {event.step}{epoch} &nbsp; "
            f"G loss {event.g_loss:.3f} &nbsp; D loss {event.d_loss:.3f} &nbsp; "
            f"D(x) {event.d_real:.2f} &nbsp; D(G(z)) {event.d_fake:.2f}"
        )

    def freeze(self, event) -> None:
        """Replace the live widgets with one static PNG of the final state."""
        from IPython.display import Image

        fig, (ax_grid, ax_loss, ax_d) = new_figure(3, (13, 3.6))
        if self.picture is _samples_png:
            ax_grid.imshow(grid_image(event.samples()).permute(1, 2, 0).numpy(), interpolation="nearest")
            ax_grid.set_title(f"samples at step {event.step}")
        else:
            import io

            from PIL import Image as PILImage

            ax_grid.imshow(PILImage.open(io.BytesIO(self.picture(event))))
            ax_grid.set_title(f"step {event.step}")
        ax_grid.axis("off")
        plot_history(event.trainer.history, axes=(ax_loss, ax_d))
        fig.suptitle(self.title + (" (interrupted)" if event.trainer.interrupted else ""))
        fig.tight_layout()
        picture = Image(figure_png(fig, dpi=72))
        if self._handle is not None:
            self._handle.update(picture)
        else:
            from IPython.display import display

            display(picture)
        # Nothing shows the live widgets any more; closing them keeps their state (and
        # its images) out of the saved notebook.
        for w in (self.widget, self._row, self.status, self.grid, self.curves, self.class_view):
            w.close()
        if self.classes and event.trainer.config.dataset == "mnist":
            from IPython.display import HTML, display

            display(HTML(self._class_report(event.trainer, event.step)))

    def _class_report(self, trainer, step: int | None = None) -> str:
        """HTML: the share of each digit among 256 fixed samples, and a warning when the
        samples are legible but some digit is missing, or when, past ``COLLAPSE_STEPS``
        steps, the classifier puts nearly all of them in one class."""
        if trainer.config.dataset != "mnist":
            return ""
        latent_dim = trainer.config.latent_dim
        if self._class_noise is None or self._class_noise.shape[1] != latent_dim:
            self._class_noise = probe_noise(latent_dim)
        from .metrics import CONFIDENT

        try:
            scores = probe_classes(trainer, self._class_noise)
        except FileNotFoundError:  # no classifier weights shipped
            self.classes = False
            return ""
        bars = " ".join(
            f"<span style='display:inline-block;width:34px;text-align:center'>"
            f"<span style='display:inline-block;width:14px;height:{int(share * 120) + 1}px;"
            f"background:#4a7ab5;vertical-align:bottom'></span><br>{digit}</span>"
            for digit, share in enumerate(scores["class_histogram"])
        )
        text = (f"digits among 256 samples (entropy {scores['class_entropy']:.2f}, "
                f"{scores['legible']:.0%} legible at confidence {CONFIDENT})")
        warning = ""
        if step is not None and step >= COLLAPSE_STEPS and scores["class_entropy"] < 0.5:
            warning = (
                f"<br><b style='color:#b00'>Warning: after {step:,} steps the samples look "
                "alike</b> (nearly all in one class): G has collapsed onto a few outputs, "
                "mode collapse. The course recipe's BatchNorm in G and weight average "
                "prevent it; a lower lr can help."
            )
        elif scores["classes_missing"] and scores["legible"] >= 0.5:
            missing = ", ".join(map(str, scores["classes_missing"]))
            warning = (
                f"<br><b style='color:#b00'>Warning: no sample looks like {missing}.</b> "
                "The generator has stopped drawing these digits: mode collapse. It may "
                "recover as D catches on; if it lasts, try BatchNorm in G, a lower lr or "
                "the logits loss."
            )
        return f"<div style='font-size:12px'>{bars}<br>{text}{warning}</div>"


class LoopLog:
    """What ``LiveDashboard`` reads from a ``GANTrainer``, for a hand-written loop: the
    history of the four numbers, the generator and a fixed batch of noise.

    generator: G, taking noise (N, latent_dim) to images (N, 1, 28, 28) in [-1, 1].
    ``record(...)`` appends one step and returns the event to pass to the dashboard.
    """

    def __init__(self, generator: torch.nn.Module, n_samples: int = 64, seed: int = 0,
                 dataset: str = "mnist", steps_per_epoch: int | None = None) -> None:
        from types import SimpleNamespace

        from .checkpoints import HISTORY_KEYS

        self.sampler = generator
        self.device = device_of(generator)
        latent_dim = noise_size(generator)
        self.config = SimpleNamespace(dataset=dataset, latent_dim=latent_dim)
        self.fixed_noise = torch.randn(n_samples, latent_dim,
                                       generator=torch.Generator().manual_seed(seed)).to(self.device)
        self.history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
        self.steps_per_epoch = steps_per_epoch
        self.interrupted = False

    def fixed_samples(self) -> torch.Tensor:
        """G's images for the fixed noise, in eval mode: (n_samples, 1, 28, 28), on the CPU."""
        was_training = self.sampler.training
        self.sampler.eval()
        with torch.no_grad():
            samples = self.sampler(self.fixed_noise).cpu()
        self.sampler.train(was_training)
        return samples

    def record(self, step: int, g_loss, d_loss, d_real, d_fake, final: bool = False):
        """Append one step's G and D losses and mean D(x) and D(G(z)) (tensors or
        floats) to the history; returns the ``TrainEvent`` for the dashboard."""
        from .trainer import TrainEvent

        values = [float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
                  for v in (g_loss, d_loss, d_real, d_fake)]
        if not final:
            for key, value in zip(self.history, values):
                self.history[key].append(value)
        epoch = step / self.steps_per_epoch if self.steps_per_epoch else 0.0
        return TrainEvent(self, step, epoch, *values, final=final)


def latent_explorer(
    generator: torch.nn.Module, n_sliders: int = 6, seed: int = 0, scale: int = 6
) -> widgets.HBox:
    """Sliders that move a noise vector through latent space and redraw G's image.

    Starts from z ~ N(0, 1) (``seed``) and gives one slider per random unit direction
    (``n_sliders`` of them, orthonormalised), each moving z by -3..3 along it, plus
    buttons for a new starting point. Returns the ipywidgets box to display.
    """
    import ipywidgets as widgets

    g = torch.Generator().manual_seed(seed)
    latent_dim = noise_size(generator)
    directions = torch.linalg.qr(torch.randn(latent_dim, n_sliders, generator=g)).Q.T
    state = {"z": torch.randn(latent_dim, generator=g)}
    image = widgets.Image(format="png", layout=widgets.Layout(width=f"{28 * scale}px"))
    sliders = [
        widgets.FloatSlider(0.0, min=-3.0, max=3.0, step=0.1, description=f"dir {i + 1}",
                            continuous_update=True)
        for i in range(n_sliders)
    ]
    new_start = widgets.Button(description="new starting z")
    norm = widgets.HTML()

    def redraw(_=None) -> None:
        alphas = torch.tensor([s.value for s in sliders])
        z = state["z"] + alphas @ directions
        was_training = generator.training
        generator.eval()
        with torch.no_grad():
            img = generator(z.view(1, -1).to(device_of(generator)))
        generator.train(was_training)
        image.value = _grid_png(img, scale=scale)
        norm.value = f"|z| = {z.norm():.2f} (typical: {math.sqrt(latent_dim):.1f})"

    def reseed(_) -> None:
        state["z"] = torch.randn(latent_dim, generator=g)
        for s in sliders:
            s.value = 0.0
        redraw()

    for s in sliders:
        s.observe(redraw, names="value")
    new_start.on_click(reseed)
    redraw()
    return widgets.HBox([image, widgets.VBox(sliders + [new_start, norm])])


WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def prune_widget_state(notebook: dict) -> int:
    """Drop saved widget state that no output of ``notebook`` (an nbformat dict) can
    reach: the dashboards close their widgets when they leave their static picture, but
    nbclient keeps the closed widgets' last images in the notebook's metadata. Returns
    the number of models dropped."""
    state = notebook.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state")
    if not state:
        return 0
    roots = [
        out["data"][WIDGET_VIEW]["model_id"]
        for cell in notebook["cells"] for out in cell.get("outputs", [])
        if WIDGET_VIEW in out.get("data", {})
    ]
    keep, todo = set(), [r for r in roots if r in state]
    while todo:
        model_id = todo.pop()
        if model_id in keep or model_id not in state:
            continue
        keep.add(model_id)
        text = str(state[model_id].get("state", {}))
        todo += [ref for ref in state if f"IPY_MODEL_{ref}" in text]
    dropped = [m for m in state if m not in keep]
    for model_id in dropped:
        del state[model_id]
    return len(dropped)
