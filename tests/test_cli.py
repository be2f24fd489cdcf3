import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from gan_helpers.cli import main
from gan_helpers.checkpoints import load_checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--max-steps", "5", "--batch-size", "32", "--out", str(out), "--quiet"]) == 0
    return out


def test_train_writes_grids_and_checkpoint(trained, capsys):
    assert (trained / "checkpoint.pt").exists()
    assert (trained / "step_0000005.png").exists() and (trained / "early_vs_late.png").exists()
    state = load_checkpoint(trained / "checkpoint.pt")
    assert state["step"] == 5 and state["config"]["batch_size"] == 32


def test_train_names_the_model_as_the_course_does(tmp_path, capsys):
    assert main(["train", "--model", "dcgan", "--max-steps", "1", "--batch-size", "8",
                 "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"training the DCGAN (course recipe) on mnist, from step 0; output in {tmp_path}" in out


def test_sample_npy_shape_and_range(trained, tmp_path):
    out = tmp_path / "s.npy"
    assert main(["sample", "--checkpoint", str(trained / "checkpoint.pt"), "--n", "7", "--out", str(out), "--seed", "3"]) == 0
    a = np.load(out)
    assert a.shape == (7, 28, 28) and a.dtype == np.float32
    assert a.min() >= -1 and a.max() <= 1 and a.std() > 0
    again = tmp_path / "t.npy"
    main(["sample", "--checkpoint", str(trained / "checkpoint.pt"), "--n", "7", "--out", str(again), "--seed", "3"])
    assert np.array_equal(a, np.load(again)), "same seed, same images"


def test_sample_png_grid(trained, tmp_path):
    from PIL import Image

    out = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", str(trained / "checkpoint.pt"), "--n", "16", "--out", str(out)]) == 0
    assert Image.open(out).size == (242, 62)  # 8 x 2 tiles of 28 px, 2 px padding
    assert main(["sample", "--checkpoint", str(trained), "--n", "100", "--out", str(out)]) == 0
    assert Image.open(out).size == (302, 302)  # past 64 a square: 10 x 10, not 8 x 13


def test_a_run_folder_stands_for_its_checkpoint(trained, tmp_path):
    by_file, by_folder = tmp_path / "file.npy", tmp_path / "folder.npy"
    main(["sample", "--checkpoint", str(trained / "checkpoint.pt"), "--n", "3", "--out", str(by_file), "--seed", "1"])
    assert main(["sample", "--checkpoint", str(trained), "--n", "3", "--out", str(by_folder), "--seed", "1"]) == 0
    assert np.array_equal(np.load(by_file), np.load(by_folder))


def test_a_folder_without_checkpoint_is_named(tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "a.png")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path} is a folder with no checkpoint.pt in it" in err and err.count("\n") == 1


@pytest.mark.parametrize("name", ["fc", "DCGAN"])
def test_sample_takes_a_shipped_generator_by_name(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file called fc or DCGAN here
    assert main(["sample", "--checkpoint", name, "--n", "4", "--out", "s.npy", "--seed", "0"]) == 0
    from gan_helpers.checkpoints import generate, pretrained

    expected = generate(pretrained(name), 4, seed=0)[:, 0].numpy()  # any case
    assert np.array_equal(np.load(tmp_path / "s.npy"), expected)


def test_export_keeps_what_sampling_needs(trained, tmp_path, capsys):
    exported = tmp_path / "generator.pt"
    assert main(["export", "--checkpoint", str(trained), "--out", str(exported)]) == 0
    assert f"wrote {exported}" in capsys.readouterr().out
    state = load_checkpoint(exported)
    assert state["kind"] == "generator" and "discriminator" not in state and "opt_g" not in state
    assert exported.stat().st_size < (trained / "checkpoint.pt").stat().st_size / 2
    by_checkpoint, by_export = tmp_path / "a.npy", tmp_path / "b.npy"
    main(["sample", "--checkpoint", str(trained), "--n", "5", "--out", str(by_checkpoint), "--seed", "2"])
    assert main(["sample", "--checkpoint", str(exported), "--n", "5", "--out", str(by_export), "--seed", "2"]) == 0
    assert np.array_equal(np.load(by_checkpoint), np.load(by_export))


def test_export_refuses_to_write_over_its_checkpoint(trained, capsys):
    before = (trained / "checkpoint.pt").read_bytes()
    assert main(["export", "--checkpoint", str(trained), "--out", str(trained / "checkpoint.pt")]) == 1
    assert "writing over it would drop D, both optimizers" in capsys.readouterr().err
    assert (trained / "checkpoint.pt").read_bytes() == before


def test_resume_continues(trained):
    assert main(["train", "--resume", str(trained / "checkpoint.pt"), "--max-steps", "8", "--quiet"]) == 0
    assert load_checkpoint(trained / "checkpoint.pt")["step"] == 8


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--lr", "-1"], "argument --lr: must be a positive number, got -1"),
        (["train", "--model", "gpt"], "argument --model: invalid choice: 'gpt'"),
        (["train", "--batch-size", "0"], "must be a positive integer, got 0"),
        (["train", "--lr", "inf"], "argument --lr: must be a positive number, got inf"),
        # not "invalid _positive_int value": the helper's name is no message
        (["sample", "--n", "x"], "argument --n: must be a positive integer, got x"),
        (["sample", "--seed", "1e30"], "--seed: must be a whole number from 0 to 2**63 - 1"),
        (["sample", "--seed", "-1"], "--seed: must be a whole number from 0 to 2**63 - 1"),
        (["sample", "--checkpoint", "x.pt"], "the following arguments are required: --out"),
    ],
)
def test_bad_option_is_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv,message",
    [
        (["sample", "--checkpoint", "nope.pt", "--out", "a.png"],
         "checkpoint nope.pt does not exist; check the path, or pass fc or dcgan"),
        (["train", "--b1", "2", "--max-steps", "1"], "b1 must be in [0, 1), got 2.0"),
        (["train", "--augment", "9", "--max-steps", "1"],
         "augment is the largest shift in pixels, 0 (off) to 7, got 9"),
        (["train", "--label-smoothing", "0.6", "--max-steps", "1"],
         "label_smoothing must be in [0, 0.5)"),
        (["train", "--width", "64", "--max-steps", "1"],
         "--width sets the DCGAN's channel width; the FC networks keep the seed's sizes"),
        (["train", "--d-width", "8", "--max-steps", "1"],
         "--d-width sets the DCGAN's channel width"),
        (["train", "--model", "dcgan", "--no-g-batchnorm", "--max-steps", "1"],
         "the DCGAN generator always has it"),
        (["train", "--device", "tpu", "--max-steps", "1"],
         "unknown device 'tpu': use cpu, cuda, cuda:N, mps or auto"),
        (["train", "--device", "cuda", "--max-steps", "1"], "PyTorch sees no CUDA GPU here"),
    ],
)
def test_bad_values_are_one_line_errors(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on any machine
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_resume_from_a_run_folder(tmp_path):
    argv = ["train", "--max-steps", "2", "--batch-size", "32", "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    assert main(["train", "--resume", str(tmp_path), "--max-steps", "4", "--quiet"]) == 0
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.pt", "early_vs_late.png", "step_0000002.png", "step_0000004.png",
        "training.gif",
    ]


def test_a_gpu_run_resumes_on_the_cpu_of_a_machine_without_one(
        tmp_path, capsys, monkeypatch, as_if_trained_on_cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--max-steps", "2", "--batch-size", "32", "--out", str(tmp_path), "--quiet"]) == 0
    as_if_trained_on_cuda(tmp_path / "checkpoint.pt")
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path), "--max-steps", "3", "--quiet"]) == 0
    assert "was trained on cuda and continues on cpu" in capsys.readouterr().out
    assert load_checkpoint(tmp_path)["device"] == "cpu"


def test_resume_refuses_architecture_change(trained, capsys):
    assert main(["train", "--resume", str(trained / "checkpoint.pt"), "--model", "dcgan"]) == 1
    err = capsys.readouterr().err
    assert "--model dcgan (the checkpoint's: --model fc): cannot change on --resume" in err


def _config_options():
    """The train options that set a TrainConfig field, as argparse actions."""
    from dataclasses import fields

    from gan_helpers.cli import build_parser
    from gan_helpers.config import TrainConfig

    (commands,) = [a for a in build_parser()._actions if a.choices and a.dest == "command"]
    options = {a.dest: a for a in commands.choices["train"]._actions}
    return [options[f.name] for f in fields(TrainConfig) if f.name in options]


def _as_argv(action, value) -> list[str]:
    if isinstance(value, bool):  # --g-batchnorm / --no-g-batchnorm
        return [action.option_strings[0 if value else 1]]
    return [action.option_strings[0], str(value)]


def test_resume_refuses_every_training_choice(trained, tmp_path, capsys):
    # A value given with --resume that the run silently ignored would mislead: the run
    # goes on with its checkpoint's configuration, so each option that differs from it
    # must be refused.
    checkpoint = tmp_path / "checkpoint.pt"  # a copy: a wrongly accepted option trains on
    checkpoint.write_bytes((trained / "checkpoint.pt").read_bytes())
    before = load_checkpoint(checkpoint)
    saved = before["config"]
    config_options = _config_options()
    assert {a.dest for a in config_options} >= {"r1", "sample_interval", "lr", "model", "g_batchnorm"}
    for action in config_options:
        was = saved[action.dest]
        if isinstance(was, bool):
            other = not was
        elif action.choices:
            other = next(c for c in action.choices if c != was)
        else:
            other = 2 if was == 1 else 1
        value = _as_argv(action, other)
        argv = ["train", "--resume", str(checkpoint), "--max-steps", "6", "--out", str(tmp_path), *value]
        assert main(argv) == 1, f"{value} was accepted on --resume"
        err = capsys.readouterr().err
        shown = action.type(str(other)) if action.type else other  # as argparse reads it
        expected = f"{' '.join(_as_argv(action, shown))} (the checkpoint's: "
        assert expected in err and "cannot change on --resume" in err, err
    assert load_checkpoint(checkpoint)["step"] == before["step"]


def test_resume_takes_the_first_command_again(trained, tmp_path, capsys):
    # Running the same command again with --resume added is the natural way to go on:
    # every option given with the checkpoint's own value changes nothing and passes.
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes((trained / "checkpoint.pt").read_bytes())
    before = load_checkpoint(checkpoint)
    saved = before["config"]
    same = [arg for action in _config_options() for arg in _as_argv(action, saved[action.dest])]
    assert "--batch-size" in same and "--g-batchnorm" in same and "--lr" in same
    target = before["step"] + 2
    argv = ["train", *same, "--max-steps", str(target), "--out", str(tmp_path), "--resume", str(checkpoint), "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    state = load_checkpoint(checkpoint)
    assert state["step"] == target and state["config"] == saved


def test_label_smoothing_option_is_saved_and_fixed_on_resume(tmp_path, capsys):
    argv = ["train", "--label-smoothing", "0.1", "--max-steps", "2", "--batch-size", "32",
            "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    assert load_checkpoint(tmp_path / "checkpoint.pt")["config"]["label_smoothing"] == 0.1
    resume = ["train", "--resume", str(tmp_path / "checkpoint.pt"), "--label-smoothing", "0"]
    assert main(resume) == 1
    err = capsys.readouterr().err
    assert "--label-smoothing 0.0 (the checkpoint's: --label-smoothing 0.1): cannot change" in err


def test_sample_refuses_other_suffix(trained, capsys):
    assert main(["sample", "--checkpoint", str(trained / "checkpoint.pt"), "--out", "x.jpg"]) == 1
    assert "--out must end in .npy or .png" in capsys.readouterr().err


def test_more_samples_than_memory_is_a_one_line_error(tmp_path, capsys):
    # 10**12 noise vectors (400 TB): the allocation fails at once, without using memory.
    argv = ["sample", "--checkpoint", "fc", "--n", str(10**12), "--out", str(tmp_path / "s.npy")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: not enough memory (") and "a smaller --n" in err, err
    assert err.count("\n") == 1 and not (tmp_path / "s.npy").exists()


def test_help_is_complete(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for option in ("--model", "--dataset", "--epochs", "--max-seconds", "--batch-size", "--lr", "--b1",
                   "--b2", "--latent-dim", "--loss", "--sample-interval", "--seed", "--out", "--resume",
                   "--recipe", "--augment", "--augment-ramp", "--ema", "--ema-rampup", "--decay-start", "--decay-steps", "--g-lr-factor",
                   "--label-smoothing", "--width", "--d-width", "--r1"):
        assert option in text


def test_every_option_of_every_command_says_what_it_does():
    from gan_helpers.cli import build_parser

    (commands,) = [a for a in build_parser()._actions if a.choices and a.dest == "command"]
    unexplained = [f"{name} {a.option_strings or a.dest}" for name, sub in commands.choices.items()
                   for a in sub._actions if not a.help]
    assert len(commands.choices) >= 9 and unexplained == []


def test_sigkill_then_resume_is_bit_exact_and_leaves_no_temporary_file(tmp_path):
    out, straight = tmp_path / "run", tmp_path / "straight"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count in every run
    train = [sys.executable, "-m", "gan_helpers", "train", "--quiet"]
    proc = subprocess.Popen(train + ["--max-steps", "100000", "--checkpoint-every", "0.2",
                                     "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    step = load_checkpoint(out / "checkpoint.pt")["step"]
    assert step > 0
    end = str(step + 3)
    for cmd in (["--resume", str(out), "--max-steps", end],
                ["--max-steps", end, "--out", str(straight)]):
        subprocess.run(train + cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    resumed, unbroken = load_checkpoint(out), load_checkpoint(straight)
    assert resumed["step"] == unbroken["step"] == step + 3
    for net in ("generator", "generator_ema", "discriminator"):
        for key, value in unbroken[net].items():
            assert torch.equal(resumed[net][key], value), f"{net}.{key} differs"
    assert torch.equal(resumed["history"]["g_loss"], unbroken["history"]["g_loss"])
    assert list(out.glob(".*.tmp")) == []


def test_mismatched_torchvision_gets_an_error_that_names_the_fix(tmp_path):
    # A torchvision built for another torch fails at import with a RuntimeError about
    # its operators; a stand-in package that fails the same way takes its place here.
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n'
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", "import gan_helpers"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: torchvision")
    assert "does not fit the installed torch" in last
    assert "operator torchvision::nms does not exist" in last
    assert "pip install --force-reinstall torch torchvision" in last
