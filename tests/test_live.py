import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from gan_helpers.data import load_images, to_unit_range
from gan_helpers.live import (
    WIDGET_STATE,
    WIDGET_VIEW,
    LiveDashboard,
    latent_explorer,
    prune_widget_state,
)
from gan_helpers.models import FCGenerator
from gan_helpers.plots import new_figure, plot_history
from gan_helpers.config import TrainConfig
from gan_helpers.trainer import GANTrainer


def test_redraws_are_throttled_by_rate_and_by_their_own_cost():
    d = LiveDashboard("t", updates_per_second=2.0, max_draw_share=0.2)
    assert d.due(0.0)  # nothing drawn yet
    d._last, d._draw_cost = 100.0, 0.01  # cheap redraws: the rate limit rules
    assert not d.due(100.4) and d.due(100.5)
    d._draw_cost = 0.3  # a 0.3-s redraw may take at most 20% of the time: every 1.5 s
    assert not d.due(101.4) and d.due(101.5)


def test_draw_share_must_be_a_fraction_and_the_rate_positive():
    with pytest.raises(ValueError, match="max_draw_share"):
        LiveDashboard("t", max_draw_share=0)
    for rate in (0, -1):  # 0 divided by zero; -1 redrew as often as the draw-time cap allowed
        with pytest.raises(ValueError, match=f"updates_per_second must be a positive number.*got {rate}"):
            LiveDashboard("t", updates_per_second=rate)


def test_long_histories_are_thinned_to_max_points():
    n = 5000
    history = {k: [math.sin(i / 100) for i in range(n)] for k in ("g_loss", "d_loss", "d_real", "d_fake")}
    fig, axes = new_figure(2)
    plot_history(history, axes=axes, smooth=10, max_points=300)
    g_line = axes[0].get_lines()[0]
    x = g_line.get_xdata()
    assert len(x) == 300 and x[0] == 1 and x[-1] == n
    # Kept points are the running mean at those steps.
    assert g_line.get_ydata()[-1] == pytest.approx(sum(history["g_loss"][-10:]) / 10)
    plot_history({k: v[:200] for k, v in history.items()}, axes=axes, smooth=10, max_points=300)
    assert len(axes[0].get_lines()[0].get_xdata()) == 200  # one point per step, from step 1


class Replay(nn.Module):
    """A stand-in generator that ignores its noise and returns real digits in turn:
    ``digits`` (K, 1, 28, 28) in [-1, 1], repeated to the batch size."""

    def __init__(self, digits: torch.Tensor, latent_dim: int = 100) -> None:
        super().__init__()
        self.digits = digits
        self.latent_dim = latent_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[1] != self.latent_dim:
            raise ValueError(f"expected noise of size {self.latent_dim}, got {z.shape[1]}")
        index = torch.arange(z.shape[0]) % self.digits.shape[0]
        return self.digits[index]


def _trainer_with(generator, dataset="mnist"):
    config = SimpleNamespace(dataset=dataset, latent_dim=generator.latent_dim)
    return SimpleNamespace(config=config, sampler=generator, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def real_digits():
    test = load_images("mnist", split="test")
    images, labels = test.images, test.labels
    return to_unit_range(images[:256]).unsqueeze(1), labels[:256]


def test_class_report_warns_when_digits_vanish(real_digits):
    images, labels = real_digits
    ones = images[labels == 1][:5]  # a generator that draws nothing but ones
    report = LiveDashboard("t")._class_report(_trainer_with(Replay(ones)))
    assert "Warning: no sample looks like 0, 2, 3, 4, 5, 6, 7, 8, 9." in report
    assert "mode collapse" in report
    # A run with another latent size gets the same report, from noise of its size.
    report = LiveDashboard("t")._class_report(_trainer_with(Replay(ones, latent_dim=64)))
    assert "Warning: no sample looks like 0, 2, 3, 4, 5, 6, 7, 8, 9." in report


def test_class_report_is_quiet_when_every_digit_is_drawn(real_digits):
    images, labels = real_digits
    assert set(labels.tolist()) == set(range(10))
    report = LiveDashboard("t")._class_report(_trainer_with(Replay(images)))
    assert "digits among 256 samples" in report and "Warning" not in report


def test_class_report_does_not_warn_about_noise():
    # Early in training nothing is legible: a missing digit then means nothing yet.
    noise = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    report = LiveDashboard("t")._class_report(_trainer_with(Replay(noise)))
    assert "legible" in report and "Warning" not in report


def test_class_report_is_empty_where_the_digit_classifier_does_not_apply(real_digits):
    report = LiveDashboard("t")._class_report(_trainer_with(Replay(real_digits[0]), "fashion-mnist"))
    assert report == ""


class Handle:
    def __init__(self):
        self.updates = []

    def update(self, obj):
        self.updates.append(obj)


def test_a_run_ends_in_one_static_picture_and_closed_widgets(monkeypatch, mnist_small, tmp_path):
    import IPython.display

    shown, handle = [], Handle()

    def display(obj, display_id=False):
        shown.append(obj)
        return handle if display_id else None

    monkeypatch.setattr(IPython.display, "display", display)
    monkeypatch.setattr("gan_helpers.live._jupyter_kernel", lambda: True)
    config = TrainConfig.for_recipe("course", batch_size=64, sample_interval=1000)
    trainer = GANTrainer(config, data=mnist_small, out_dir=tmp_path, log=lambda _: None)
    dash = LiveDashboard("run", updates_per_second=1e-6)  # due once, then only at the end
    # no picture yet: the images are hidden rather than shown as broken icons
    assert dash._row.layout.display == "none"
    trainer.fit(steps=3, hooks=[dash], progress=False)
    assert dash._row.layout.display is None and dash.grid.value[:8] == b"\x89PNG\r\n\x1a\n"

    assert dash.updates == 2  # the first step and the final redraw; the throttle held the rest
    assert shown[0] is dash.widget  # shown live, in place, once
    (picture,) = handle.updates  # then replaced by a static PNG of the final state
    assert isinstance(picture, IPython.display.Image) and picture.data[:8] == b"\x89PNG\r\n\x1a\n"
    assert dash.widget.comm is None and dash.grid.comm is None  # closed: not saved with the notebook
    assert "step 3" in dash.status.value
    assert "digits among 256 samples" in shown[-1].data  # the class report stays as HTML


def test_outside_jupyter_the_dashboard_prints_text(monkeypatch, mnist_small, capsys):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, display_id=False: shown.append(obj))
    monkeypatch.setattr("gan_helpers.live.TEXT_INTERVAL", 1e6)  # the first step and the end
    config = TrainConfig.for_recipe("course", batch_size=64, sample_interval=1000)
    trainer = GANTrainer(config, data=mnist_small, log=lambda _: None)
    dash = LiveDashboard("run")
    trainer.fit(steps=3, hooks=[dash], progress=False)  # pytest runs no Jupyter kernel

    assert shown == [] and dash.updates == 0  # no widget repr printed, nothing drawn
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("run: no Jupyter kernel here")
    assert [line.split(" (")[0] for line in lines[1:]] == ["run: step 1", "run: step 3"]
    assert "G loss" in lines[2] and "D(G(z))" in lines[2] and "&nbsp;" not in lines[2]


def test_a_jupyter_kernel_is_recognised():
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("from gan_helpers.live import _jupyter_kernel\n_jupyter_kernel()")]
    NotebookClient(nb, kernel_name="python3", timeout=60).execute()
    assert nb.cells[0].outputs[0]["data"]["text/plain"] == "True"  # widgets, not text, there


def test_prune_widget_state_keeps_only_what_outputs_reach():
    state = {
        "box": {"state": {"children": ["IPY_MODEL_img", "IPY_MODEL_slider"]}},
        "img": {"state": {"value": "png"}},
        "slider": {"state": {"layout": "IPY_MODEL_layout"}},
        "layout": {"state": {}},
        "closed_dashboard": {"state": {"children": ["IPY_MODEL_old_img"]}},
        "old_img": {"state": {"value": "png"}},
    }
    notebook = {
        "metadata": {"widgets": {WIDGET_STATE: {"state": state}}},
        "cells": [{"cell_type": "code", "outputs": [{"data": {WIDGET_VIEW: {"model_id": "box"}}}]}],
    }
    assert prune_widget_state(notebook) == 2
    assert set(state) == {"box", "img", "slider", "layout"}
    assert prune_widget_state({"metadata": {}, "cells": []}) == 0


def test_latent_explorer_redraws_on_a_slider_and_restarts_on_the_button():
    generator = FCGenerator(batchnorm=True)  # in training mode, as a trainer leaves G
    box = latent_explorer(generator, n_sliders=3, seed=0)
    image, (s1, _, _, restart, norm) = box.children[0], box.children[1].children
    first = image.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and "|z| =" in norm.value
    s1.value = 2.0
    moved = image.value
    assert moved != first
    restart.click()
    assert s1.value == 0.0 and image.value not in (first, moved)
    # Drawn in eval mode (BatchNorm cannot normalise a batch of one), then handed back
    # in the mode it came in.
    assert generator.training


def test_a_hand_written_loop_feeds_the_dashboard(monkeypatch):
    import IPython.display

    from gan_helpers.live import LoopLog

    shown = []
    monkeypatch.setattr(IPython.display, "display",
                        lambda obj, display_id=False: shown.append(obj) or None)
    monkeypatch.setattr("gan_helpers.live._jupyter_kernel", lambda: True)
    torch.manual_seed(0)
    generator = FCGenerator()
    log = LoopLog(generator, n_samples=16, steps_per_epoch=4)
    dash = LiveDashboard("loop", classes=False)
    for step in range(1, 4):
        dash(log.record(step, torch.tensor(0.7), 0.69, torch.tensor(0.5), 0.4 + step / 100))
    event = log.record(3, 0.7, 0.69, 0.5, 0.43, final=True)
    dash(event)
    assert log.history["d_fake"] == pytest.approx([0.41, 0.42, 0.43])  # the final call adds none
    assert event.epoch == 0.75 and event.samples().shape == (16, 1, 28, 28)
    assert generator.training  # drawn in eval mode, handed back as it was
    assert dash.updates == 2 and "step 3" in dash.status.value
    # the same fixed noise every time: the film of a loop shows the same digits forming
    assert torch.equal(log.fixed_samples(), event.samples())


def test_a_loop_records_losses_that_still_carry_their_graph():
    # The seed's loop passes g_loss and d_loss as they come from backward(): recording
    # them must not warn about converting a tensor that requires grad.
    import warnings

    from gan_helpers.live import LoopLog

    log = LoopLog(FCGenerator(), n_samples=4)
    loss = torch.tensor(0.7, requires_grad=True) * 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        event = log.record(1, loss, loss, torch.tensor(0.5), 0.4)
    assert log.history["g_loss"] == pytest.approx([0.7]) and event.d_fake == pytest.approx(0.4)


def test_class_report_warns_when_the_samples_look_alike():
    # The seed's recipe on a CPU: every noise vector gives the same blur. Early on that
    # is a G that has not learnt yet; past COLLAPSE_STEPS it is mode collapse.
    from gan_helpers.live import COLLAPSE_STEPS

    blur = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 0.4 - 0.8
    trainer = _trainer_with(Replay(blur))
    late = LiveDashboard("t")._class_report(trainer, step=COLLAPSE_STEPS + 398)
    assert f"after {COLLAPSE_STEPS + 398:,} steps the samples look alike" in late
    assert "mode collapse" in late
    for early in (COLLAPSE_STEPS - 1, None):
        assert "Warning" not in LiveDashboard("t")._class_report(trainer, step=early)


def test_class_report_is_quiet_about_a_healthy_run_past_the_collapse_steps(real_digits):
    report = LiveDashboard("t")._class_report(_trainer_with(Replay(real_digits[0])), step=50_000)
    assert "entropy" in report and "Warning" not in report


def test_probe_classes_scores_the_sampler_and_restores_its_mode(mnist_small):
    from gan_helpers.live import probe_classes, probe_noise

    trainer = GANTrainer(TrainConfig(ema=0.0, batch_size=64), data=mnist_small)
    noise = probe_noise(100)
    assert noise.shape == (256, 100)
    assert torch.equal(noise, probe_noise(100))  # the same 256 samples at every update
    scores = probe_classes(trainer, noise)
    assert len(scores["class_histogram"]) == 10
    assert math.isclose(sum(scores["class_histogram"]), 1.0, abs_tol=1e-3)
    assert trainer.sampler.training  # drawn in eval mode, then set back
    with pytest.raises(ValueError, match="latent"):  # a failing draw sets it back too
        probe_classes(trainer, torch.randn(4, 7))
    assert trainer.sampler.training
