import torch

from gan_helpers import toy
from gan_helpers.live import LiveDashboard


def test_the_ring_and_its_modes():
    points = toy.ring(4000, torch.Generator().manual_seed(0))
    assert points.shape == (4000, 2) and points.dtype == torch.float32
    radius = points.norm(dim=1)
    assert (radius - toy.RADIUS).abs().max() < 8 * toy.SPREAD
    assert toy.modes_covered(points) == toy.MODES
    # points on three modes only cover three; points between modes cover none
    angle = 2 * torch.pi * torch.tensor([0, 1, 2]).repeat(100) / toy.MODES
    three = toy.RADIUS * torch.stack([angle.cos(), angle.sin()], 1)
    assert toy.modes_covered(three) == 3
    assert toy.modes_covered(torch.zeros(100, 2)) == 0


def test_minibatch_std_sees_a_collapsed_batch_and_keeps_real_and_fake_apart():
    layer = toy.MinibatchStd()
    out = layer(torch.ones(5, 3))
    assert out.shape == (5, 4) and torch.equal(out[:, 3], torch.zeros(5))
    spread = layer(torch.tensor([[0.0], [2.0]]))[:, 1]
    assert torch.equal(spread, torch.tensor([1.0, 1.0]))
    from gan_helpers.step import _mixes_batch

    assert _mixes_batch(toy.toy_models(minibatch_std=True)[1])
    assert not _mixes_batch(toy.toy_models()[1])


def test_a_toy_run_trains_with_the_course_step_and_draws(monkeypatch):
    run = toy.ToyRun(seed=0, batch_size=64)
    events = []
    run.fit(30, hooks=[events.append], hook_every=10)
    assert [e.step for e in events] == [10, 20, 30, 30] and events[-1].final
    assert len(run.history["g_loss"]) == 30 and 0 <= run.history["d_fake"][-1] <= 1
    assert run.samples().shape == (1000, 2)
    png = run.picture()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # the same seed gives the same run
    again = toy.ToyRun(seed=0, batch_size=64).fit(30)
    assert torch.equal(again.samples(), run.samples())
    # and the course's dashboard shows it, with the toy's picture in place of digits
    monkeypatch.setattr("gan_helpers.live._jupyter_kernel", lambda: True)
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda obj, display_id=False: None)
    dash = LiveDashboard("toy", classes=False, picture=run.picture)
    run.fit(5, hooks=[dash], hook_every=5)
    assert dash.updates == 2 and "step 35" in dash.status.value
