import math

import pytest

from gan_helpers.live import LiveDashboard
from gan_helpers.plots import new_figure, plot_history


def test_redraws_are_throttled_by_rate_and_by_their_own_cost():
    d = LiveDashboard("t", updates_per_second=2.0, max_draw_share=0.2)
    assert d.due(0.0)  # nothing drawn yet
    d._last, d._draw_cost = 100.0, 0.01  # cheap redraws: the rate limit rules
    assert not d.due(100.4) and d.due(100.5)
    d._draw_cost = 0.3  # a 0.3-s redraw may take at most 20% of the time: every 1.5 s
    assert not d.due(101.4) and d.due(101.5)


def test_draw_share_must_be_a_fraction():
    with pytest.raises(ValueError, match="max_draw_share"):
        LiveDashboard("t", max_draw_share=0)


def test_long_histories_are_thinned_to_max_points():
    n = 5000
    history = {k: [math.sin(i / 100) for i in range(n)] for k in ("g_loss", "d_loss", "d_real", "d_fake")}
    fig, axes = new_figure(2)
    plot_history(history, axes=axes, smooth=10, max_points=300)
    g_line = axes[0].get_lines()[0]
    x = g_line.get_xdata()
    assert len(x) == 300 and x[0] == 10 and x[-1] == n
    # Kept points are the running mean at those steps.
    assert g_line.get_ydata()[-1] == pytest.approx(sum(history["g_loss"][-10:]) / 10)
    plot_history({k: v[:200] for k, v in history.items()}, axes=axes, smooth=10, max_points=300)
    assert len(axes[0].get_lines()[0].get_xdata()) == 191
