import pytest
import torch

from gan_helpers.data import load_images, to_unit_range
from gan_helpers.plots import grid_image, plot_history, show_grid


@pytest.fixture(scope="module")
def pixels():
    return load_images("mnist", split="test").images[:16]  # uint8 (16, 28, 28), as the data loads


def test_grid_of_every_layout_a_batch_of_digits_comes_in(pixels):
    scaled = to_unit_range(pixels)  # float (16, 1, 28, 28) in [-1, 1]
    grid = grid_image(scaled)
    assert grid.shape == (3, 2 * 30 + 2, 8 * 30 + 2)  # 8 x 2 tiles of 28 px, 2 px padding
    assert 0 <= grid.min() and grid.max() <= 1
    # the same picture from (N, 28, 28), (N, 784) and raw uint8 pixels, in both layouts
    for same in (scaled[:, 0], scaled.view(16, 784), pixels, pixels.unsqueeze(1)):
        assert torch.allclose(grid_image(same), grid, atol=1e-6)



def test_grid_of_what_a_student_has_at_hand(pixels):
    grid = grid_image(to_unit_range(pixels))
    as_floats = to_unit_range(pixels)[:, 0]
    # sample --out x.npy writes (N, 28, 28) float32; a list of single images; int64 pixels
    for same in (as_floats.numpy(), list(to_unit_range(pixels)), list(as_floats),
                 pixels.long(), pixels.numpy()):
        assert torch.allclose(grid_image(same), grid, atol=1e-6)


@pytest.mark.parametrize("images,named", [
    (torch.zeros(28, 28), r"shape \(28, 28\).*x.unsqueeze\(0\)"),
    (torch.zeros(4, 785), r"shape \(4, 785\)"),
    (torch.zeros(4, 2, 28, 28), r"shape \(4, 2, 28, 28\)"),
    (torch.zeros(0, 1, 28, 28), "empty"),
    ([], "empty"),
    ([torch.zeros(28, 28), torch.zeros(14, 14)], "differ in shape"),
    (torch.full((4, 28, 28), 300), r"0\.\.255, these span 300\.\.300"),
    (torch.zeros(4, 28, 28, dtype=torch.bool), "bool"),
])
def test_grid_names_what_it_cannot_draw(images, named):
    with pytest.raises(ValueError, match=named):
        grid_image(images)

def test_show_grid_and_plot_history_draw_on_their_axes(pixels):
    fig = show_grid(pixels, title="real")
    ax = fig.axes[0]
    assert ax.get_title() == "real" and ax.images[0].get_array().shape == (62, 242, 3)
    history = {k: [0.1 * i for i in range(300)] for k in ("g_loss", "d_loss", "d_real", "d_fake")}
    fig = plot_history(history, smooth=10, max_points=50)
    losses, outputs = fig.axes
    assert [line.get_label() for line in losses.lines] == ["G loss", "D loss", "log 2"]
    assert len(losses.lines[0].get_xdata()) == 50  # thinned to max_points
    assert outputs.get_ylim() == (0, 1)


def test_plot_history_curves_start_at_step_one_as_running_means():
    g_loss = [1.0, 3.0, 5.0, 7.0, 9.0]
    history = {"g_loss": g_loss, "d_loss": g_loss, "d_real": [0.5] * 5, "d_fake": [0.5] * 5}
    g_line = plot_history(history, smooth=2).axes[0].lines[0]
    # A live view of a short run is not blank: the mean of what there is, then of the last 2.
    assert list(g_line.get_xdata()) == [1, 2, 3, 4, 5]
    assert list(g_line.get_ydata()) == [1.0, 2.0, 4.0, 6.0, 8.0]
    one_step = {k: [0.7] for k in ("g_loss", "d_loss", "d_real", "d_fake")}
    g_line = plot_history(one_step).axes[0].lines[0]
    assert list(g_line.get_xdata()) == [1] and g_line.get_marker() == "."  # a dot, visible


def test_training_film_keeps_first_and_last_and_refuses_nothing(tmp_path, pixels):
    from PIL import Image

    from gan_helpers.plots import training_film

    grids = []
    for step in range(1, 11):
        path = tmp_path / f"step_{step:07d}.png"
        Image.fromarray(pixels[step % 16].numpy()).save(path)
        grids.append(path)
    film = Image.open(training_film(grids, tmp_path / "film.gif", frame_ms=100, max_frames=4))
    assert film.n_frames == 4 and film.size == (28, 46)  # 28 px and an 18-px label
    durations = [film.seek(i) or film.info["duration"] for i in range(4)]
    assert durations == [100, 100, 100, 800]  # the last frame stays up longer
    with pytest.raises(ValueError, match="no grids to make a film of"):
        training_film([], tmp_path / "none.gif")
