"""The quality bench's scoring loop on a tiny budget: that it runs and scores what it
says (the figures themselves come from running the bench, not from tests)."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench" / "quality.py"


def _bench_module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quality():
    return _bench_module("quality")


def test_quality_bench_scores_each_sampler_at_each_budget(quality, mnist_small, tmp_path):
    rows = quality.run("course FC", {**quality.RECIPES["course FC"], "batch_size": 64},
                       [0.5, 1.0], n=300, data=mnist_small, raw=True, g_statistics=True)
    assert [(r["recipe"], r["budget"]) for r in rows] == [
        (name, budget) for budget in (0.5, 1.0)
        for name in ("course FC", "course FC (G)", "course FC (G's BN stats)")
    ]
    # All samplers of a budget are scored at the same step (how many steps a budget
    # buys depends on the machine, so no more is asserted about them).
    steps = [r["steps"] for r in rows]
    assert 0 < steps[0] == steps[1] == steps[2] <= steps[3] == steps[4] == steps[5]
    for r in rows:
        assert r["n"] == 300 and r["frechet_distance"] > 0 and 0 <= r["legible"] <= 1
        assert r["memorisation_ratio"] > 0 and 0 <= r["near_copies"] <= 1
    assert all(r["seed"] == 0 and r["seconds"] >= r["budget"] for r in rows)
    quality.plot(rows, floor=2.5, path=tmp_path / "q.png")
    assert (tmp_path / "q.png").stat().st_size > 0


def test_ablation_sets_back_one_choice_at_a_time(quality):
    fc = quality.ablation_variants("fc")
    assert fc == {"minus batch_size": {"batch_size": 64}, "minus lr": {"lr": 0.0002},
                  "minus g_lr_factor": {"g_lr_factor": 1.0}, "minus b1": {"b1": 0.5},
                  "minus g_batchnorm": {"g_batchnorm": False}, "minus ema": {"ema": 0.0}}
    dcgan = quality.ablation_variants("dcgan")
    assert dcgan["minus r1"] == {"r1": 0.0} and dcgan["minus d_width"] == {"d_width": 32}
    assert "minus batch_size" not in dcgan  # 64, as the seed's
    assert "minus g_batchnorm" not in dcgan  # DCGAN's G always has BatchNorm
    from gan_helpers.config import TrainConfig

    for options in [*fc.values(), *dcgan.values()]:  # each is a valid recipe
        TrainConfig.for_recipe(model="dcgan" if "r1" in options or "d_width" in options else "fc", **options)


def test_additions_go_from_the_seed_recipe_to_the_course_recipe(quality):
    from gan_helpers.config import TrainConfig

    for model in ("fc", "dcgan"):
        steps = quality.addition_variants(model)
        labels = list(steps)
        assert labels[:2] == [f"seed {model.upper()}", "+ in-memory batches"]
        first = TrainConfig.for_recipe(**steps[labels[0]])
        assert first.recipe == "seed" and first.model == model
        # each step changes one choice more, and the last is the course recipe itself
        last = TrainConfig.for_recipe(**steps[labels[-1]])
        assert last == TrainConfig.for_recipe("course", model=model)
        for before, after in zip(labels[1:], labels[2:]):
            keys = set(steps[after]) | set(steps[before])
            changed = {k for k in keys if steps[after].get(k) != steps[before].get(k)}
            assert changed <= {after[2:], "augment_ramp"} and changed, (before, after)


def test_quality_bench_reads_variants(quality):
    assert quality.parse_variant("batch_size=256,lr=0.001,g_batchnorm=false") == {
        "batch_size": 256, "lr": 0.001, "g_batchnorm": False}
    with pytest.raises(SystemExit, match="bad variant"):
        quality.parse_variant("batchsize=3")
    with pytest.raises(SystemExit, match="bad variant 'width=64.5': width takes int values, got '64.5'"):
        quality.parse_variant("width=64.5")


@pytest.mark.parametrize("args, message", [
    (["--variants", "lr=-1"], "bad variant 'lr=-1': lr must be a positive number"),
    (["--budgets", "0"], "--budgets must be positive seconds"),
    (["--n", "1"], "--n must be at least 2"),
])
def test_quality_bench_refuses_bad_arguments_before_any_work(args, message):
    done = subprocess.run([sys.executable, str(BENCH), "--recipes", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and message in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""  # no data loaded, no floor


def test_quality_bench_stops_at_step_counts_and_groups_seeds(quality, mnist_small):
    options = {**quality.RECIPES["course FC"], "batch_size": 32}
    rows = [row for seed in (0, 1) for row in quality.run(
        "course FC", {**options, "seed": seed}, [3, 5], n=200, data=mnist_small,
        raw=False, by="steps")]
    # "seed" is read back from each run's TrainConfig: the seed reached the trainer.
    assert [(r["seed"], r["budget"], r["steps"]) for r in rows] == [
        (0, 3, 3), (0, 5, 5), (1, 3, 3), (1, 5, 5)]
    groups = quality.mean_over_seeds(rows)
    assert list(groups) == [("course FC", 3), ("course FC", 5)]
    assert [r["seed"] for r in groups[("course FC", 5)]] == [0, 1]


def test_speed_bench_prints_its_ratio_last():
    """One short round of bench/speed.py runs through and ends in the line the project's
    speed target is read from (its figures are not asserted: they are the machine's)."""
    done = subprocess.run(
        [sys.executable, str(BENCH.parent / "speed.py"), "--seconds", "0.2", "--rounds", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert re.fullmatch(r"ratio: \d+\.\d\d", lines[-1])
    assert any(re.match(r"fp32 matmul limit: \d+ GFLOP/s; course batch 256 reaches \d+% of it", l)
               for l in lines)


def test_speed_bench_shared_d_pass_trains_as_the_course_step():
    """The bench's one-pass-of-D step is the same maths as the course's step: from the
    same start, three steps leave both networks with the same weights and report the
    same losses (to float rounding: the matrix products are split differently)."""
    import copy

    from gan_helpers.losses import adversarial_loss
    from gan_helpers.models import build_models
    from gan_helpers.step import train_step

    speed = _bench_module("speed")
    torch.manual_seed(0)
    nets = build_models("fc")
    runs = []
    for step in (train_step, speed.shared_forward_step):
        g, d = copy.deepcopy(nets)
        opt_g = torch.optim.Adam(g.parameters(), lr=0.001, betas=(0.0, 0.999))
        opt_d = torch.optim.Adam(d.parameters(), lr=0.0005, betas=(0.0, 0.999))
        data = torch.Generator().manual_seed(1)
        stats = [step(g, d, opt_g, opt_d, adversarial_loss("bce"),
                      torch.rand(16, 1, 28, 28, generator=data) * 2 - 1,
                      torch.randn(16, 100, generator=data))
                 for _ in range(3)]
        runs.append((g, d, stats))
    (g1, d1, s1), (g2, d2, s2) = runs
    for a, b in zip([*g1.parameters(), *d1.parameters()], [*g2.parameters(), *d2.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # the weights moved: the step trained both networks
    assert not torch.equal(next(g1.parameters()), next(nets[0].parameters()))
    assert not torch.equal(next(d1.parameters()), next(nets[1].parameters()))
    for x, y in zip(s1, s2):
        torch.testing.assert_close(torch.stack([x.g_loss, x.d_loss, x.d_real, x.d_fake]),
                                   torch.stack([y.g_loss, y.d_loss, y.d_real, y.d_fake]))


@pytest.mark.parametrize("args", [["--seconds", "0"], ["--rounds", "0"], ["--threads", "0"]])
def test_speed_bench_refuses_bad_arguments(args):
    done = subprocess.run([sys.executable, str(BENCH.parent / "speed.py"), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--seconds must be positive, --rounds and --threads at least 1" in done.stderr


def test_speed_bench_times_the_course_recipes_on_a_device():
    done = subprocess.run(
        [sys.executable, str(BENCH.parent / "speed.py"), "--device", "cpu", "--seconds", "0.2",
         "--rounds", "1"], capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert re.fullmatch(r"course FC GAN on cpu, batch 128: \d+ steps/s, \d+ images/s .*", lines[-2])
    assert re.fullmatch(r"course DCGAN on cpu, batch 64: \d+ steps/s, \d+ images/s .*", lines[-1])
    bad = subprocess.run([sys.executable, str(BENCH.parent / "speed.py"), "--device", "tpu"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown device 'tpu': use cpu, cuda, cuda:N, mps or auto" in bad.stderr
    both = subprocess.run([sys.executable, str(BENCH.parent / "speed.py"), "--device", "cpu", "--compile"],
                          capture_output=True, text=True, timeout=120)
    assert both.returncode == 2 and "--compile times the CPU loops" in both.stderr
    for args in (["--profile"], ["--device", "cpu", "--profile"]):
        cpu = subprocess.run([sys.executable, str(BENCH.parent / "speed.py"), *args],
                             capture_output=True, text=True, timeout=120)
        assert cpu.returncode == 2 and "--profile measures a CUDA GPU's share" in cpu.stderr


def test_a_printed_table_reads_back_and_plots_recipe_by_recipe(quality, tmp_path, capsys):
    # --from-log redraws a finished run from its log: the rows it prints must parse back.
    rows = [{"recipe": name, "seed": seed, "seconds": 120.0, "budget": 120.0, "steps": 4000 + seed,
             "frechet_distance": fd + seed, "class_entropy": 0.9, "legible": 0.5 + seed / 10,
             "inception_score": 7.0, "memorisation_ratio": 1.0, "near_copies": 0.002,
             "classes_missing": [0, 8] if seed else []}
            for name, fd in (("seed FC", 1200.0), ("+ in-memory batches", 20.0)) for seed in (0, 1)]
    print("floor: 5000 training digits against the test split, Fréchet distance 2.77")
    quality._print_table(rows, [0, 1], "seconds")
    log = tmp_path / "run.log"
    log.write_text(capsys.readouterr().out)
    read, floor = quality.rows_from_log(log)
    assert floor == 2.77 and read == rows
    quality.plot_choices(read, floor, tmp_path / "choices.png")
    assert (tmp_path / "choices.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "empty.log").write_text("nothing here\n")
    with pytest.raises(SystemExit, match="no floor line"):
        quality.rows_from_log(tmp_path / "empty.log")


def test_runs_go_seed_by_seed_and_print_recipe_by_recipe(quality):
    args = quality._parser().parse_args(
        ["--recipes", "course FC", "seed FC", "--seeds", "0", "1", "--budgets", "120", "60",
         "--seed-max", "60"])
    jobs = quality.schedule(quality._runs(args), args, "seconds")
    # Budgets in rising order; --seed-max stops the seed recipe's runs early.
    assert [(name, options["seed"], budgets) for name, options, budgets, *_ in jobs] == [
        ("course FC", 0, [60, 120]), ("seed FC", 0, [60]),
        ("course FC", 1, [60, 120]), ("seed FC", 1, [60])]
    rows = [{"recipe": name, "seed": options["seed"], "budget": b}
            for name, options, budgets, *_ in jobs for b in budgets]
    assert [(r["recipe"], r["seed"], r["budget"]) for r in quality.by_recipe(rows)] == [
        ("course FC", 0, 60), ("course FC", 0, 120), ("course FC", 1, 60),
        ("course FC", 1, 120), ("seed FC", 0, 60), ("seed FC", 1, 60)]
