"""The grader, attacked as a clever student would: every cheat scores 0 for the exercise
it cheats on, with feedback that says why, and no notebook changes its own score."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from gan_helpers import grading
from gan_helpers.assignments import STAMP_KEY, release

SOLUTIONS = Path(__file__).resolve().parent.parent / "notebooks" / "assignments"
FC = SOLUTIONS / "01_build_the_fc_gan.ipynb"


def solution_cells(path=FC) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def replace_cell(cells: list[str], marker: str, new: str) -> list[str]:
    """``cells`` with the cell that contains ``marker`` replaced by ``new``."""
    hits = [i for i, c in enumerate(cells) if marker in c]
    assert len(hits) == 1, marker
    return cells[:hits[0]] + [new] + cells[hits[0] + 1:]


def score(cells: list[str], exercise: str, seconds: float = 60) -> dict:
    (result,) = grading.score_exercises(cells, [exercise], seconds=seconds)
    return result


STUB_GENERATOR = """class FCGenerator(nn.Module):
    def __init__(self, latent_dim=100):
        super().__init__()
        raise NotImplementedError("your code here")
"""


@pytest.fixture(scope="module")
def solved():
    return grading.score_exercises(solution_cells(), ["generator", "discriminator", "losses", "train_step"])


def test_the_solutions_score_full_marks_out_of_process(solved):
    assert [(r["name"], r["score"], r["max_score"]) for r in solved] == [
        ("generator", 1, 1), ("discriminator", 1, 1), ("losses", 1, 1), ("train_step", 1, 1)]


@pytest.mark.parametrize("cheat", [
    # the checks replaced by a top-level statement: the grader never runs it
    "import gan_helpers.checks as c\nc.Exercise.result = lambda self, *a: c.CheckResult(self.name, True, [])",
    # print and json shadowed, as once rewrote the kernel's printed scores
    "import json\nprint = lambda *a, **k: None\njson.dumps = lambda *a, **k: '[{\"score\": 20}]'",
    # a forged line of scores printed by the notebook itself
    "print('__GAN_COURSE_SCORES__' + '[{\"name\": \"generator\", \"score\": 1}]')",
])
def test_top_level_statements_cannot_change_a_score(cheat):
    cells = replace_cell(solution_cells(), "class FCGenerator(", STUB_GENERATOR) + [cheat]
    result = score(cells, "generator")
    assert result["score"] == 0 and "not implemented yet" in result["feedback"]


@pytest.mark.parametrize("exercise, code, why", [
    ("generator", "import gan_helpers\nclass FCGenerator(gan_helpers.models.FCGenerator):\n    pass",
     "FCGenerator is, or is built on, gan_helpers' FCGenerator: write your own."),
    ("generator", "from gan_helpers.models import FCGenerator",
     "FCGenerator is, or is built on, gan_helpers' FCGenerator"),
    ("train_step", "import gan_helpers.step\ndef train_step(*a):\n    return gan_helpers.step.train_step(*a)",
     "step.train_step) instead of doing the work itself: write your own."),
    ("train_step", "import functools, gan_helpers.step\n"
                   "def train_step(*a):\n    return functools.partial(gan_helpers.step.train_step)(*a)",
     "step.train_step) instead of doing the work itself: write your own."),
    ("train_step", "import gan_helpers.step\ntrain_step = lambda *a: gan_helpers.step.train_step(*a)",
     "train_step is not defined by a def or class statement"),
    ("train_step", "import functools, gan_helpers.step\n"
                   "train_step = functools.partial(gan_helpers.step.train_step)",
     "train_step is not defined by a def or class statement"),
    ("train_step", "from gan_helpers.step import train_step",
     "train_step is not a function written in the notebook (it comes from gan_helpers.step)"),
    ("generator", "import gan_helpers\nclass FCGenerator(nn.Module):\n"
                  "    def __init__(self, latent_dim=100):\n        super().__init__()\n"
                  "        self.g = gan_helpers.models.FCGenerator(latent_dim)\n"
                  "    def forward(self, z):\n        return self.g(z)",
     "your code calls gan_helpers' own implementation (models.FCGenerator.__init__)"),
])
def test_borrowed_work_scores_zero(exercise, code, why):
    marker = {"generator": "class FCGenerator(", "train_step": "def train_step("}[exercise]
    result = score(replace_cell(solution_cells(), marker, code), exercise)
    assert result["score"] == 0 and why in result["feedback"], result


def test_code_that_changes_the_checks_while_checked_scores_zero():
    # A generator without tanh whose constructor disables the tanh check: the check
    # would pass, but the grader sees its module changed.
    code = ("import gan_helpers.checks.probes\nclass FCGenerator(nn.Module):\n"
            "    def __init__(self, latent_dim=100):\n        super().__init__()\n"
            "        gan_helpers.checks.probes._check_tanh_output = lambda *a: None\n"
            "        self.net = nn.Sequential(nn.Linear(latent_dim, 128), nn.LeakyReLU(0.2), "
            "nn.Linear(128, 256), nn.LeakyReLU(0.2), nn.Linear(256, 512), nn.LeakyReLU(0.2), "
            "nn.Linear(512, 784))\n"
            "    def forward(self, z):\n        return self.net(z).view(-1, 1, 28, 28)")
    result = score(replace_cell(solution_cells(), "class FCGenerator(", code), "generator")
    assert result["score"] == 0
    assert "changed the grader's or PyTorch's own objects" in result["feedback"]
    assert "gan_helpers.checks.probes._check_tanh_output" in result["feedback"]


def test_code_run_while_defining_is_not_run():
    code = ("import gan_helpers.checks as c\n"
            "def cheat(f):\n    c.Exercise.result = lambda self, *a: c.CheckResult(self.name, True, [])\n"
            "    return f\n"
            "@cheat\ndef train_step(*a):\n    raise NotImplementedError")
    cells = replace_cell(solution_cells(), "def train_step(", code)
    assert score(cells, "train_step")["score"] == 0
    notes = grading.definitions(cells, {"train_step"})[1]
    assert any("`train_step` was not run by the grader" in n for n in notes)
    # an honest notebook gets no note: the check cells' `result = ...` binds no exercise name
    assert grading.definitions(solution_cells(), {"FCGenerator", "train_step"})[1] == []


HONEST_GENERATOR = """LATENT = 100


class FCGenerator(nn.Module):
    shape = (1, 28, 28)
    slope: float = -0.2

    def __init__(self, latent_dim: int = LATENT) -> None:
        super().__init__()
        self.hidden1 = nn.Linear(latent_dim, 128)
        self.hidden2 = nn.Linear(128, 256)
        self.hidden3 = nn.Linear(256, 512)
        self.out = nn.Linear(512, 28 * 28)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.act(self.hidden3(self.act(self.hidden2(self.act(self.hidden1(z))))))
        return torch.tanh(self.out(h)).reshape(-1, *self.shape)

    @torch.no_grad()
    def sample(self, n: int) -> tuple[torch.Tensor, ...]:
        return (self(torch.randn(n, LATENT)),)
"""


def test_honest_code_of_every_common_shape_scores_full_marks():
    # constants, literal class attributes, annotations, decorators, a failing import
    # and magics
    cells = replace_cell(solution_cells(), "class FCGenerator(", HONEST_GENERATOR)
    cells.insert(1, "%matplotlib inline\nimport google.colab  # not here\n!ls")
    results = grading.score_exercises(cells, ["generator", "train_step"])
    assert [(r["name"], r["score"]) for r in results] == [("generator", 1), ("train_step", 1)], results


def test_a_forged_result_or_an_exit_scores_zero():
    # The student's step writes a result where the checked process would, then ends it.
    code = ("import os\ndef train_step(*a):\n"
            "    for fd in range(3, 20):\n"
            "        try:\n            os.write(fd, b'{\"name\": \"losses\", \"score\": 1}')\n"
            "        except OSError:\n            pass\n"
            "    os._exit(0)")
    result = score(replace_cell(solution_cells(), "def train_step(", code), "train_step")
    assert result["score"] == 0 and "ended without a result" in result["feedback"]


def test_an_endless_check_is_stopped():
    code = "def train_step(*a):\n    while True:\n        pass"
    result = score(replace_cell(solution_cells(), "def train_step(", code), "train_step", seconds=5)
    assert result["score"] == 0 and "did not finish within 5 s" in result["feedback"]


def test_the_parent_clamps_scores_and_refuses_a_second_line_of_scores(monkeypatch):
    line = grading.scoring._WORKER_MARK + json.dumps([{"name": "generator", "score": 20, "feedback": ""}])
    outputs = iter([line, line + "\n" + line])

    def fake_run(*args, **kwargs):
        return subprocess.CompletedProcess(args, 0, stdout=next(outputs) + "\n", stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert grading.score_exercises([], ["generator", "losses"]) == [
        {"name": "generator", "score": 1, "max_score": 1, "feedback": ""},
        {"name": "losses", "score": 0, "max_score": 1, "feedback": "no score reported"}]
    second = grading.score_exercises([], ["generator"])
    assert second[0]["score"] == 0 and "2 lines of scores" in second[0]["feedback"]


def stamped(tmp_path, edit=None, name="returned.ipynb") -> Path:
    release(FC, tmp_path / "released", overwrite=True)
    nb = nbformat.read(tmp_path / "released" / FC.name, as_version=4)
    solution = nbformat.read(FC, as_version=4)
    for cell, solved_cell in zip(nb.cells, solution.cells):
        cell.source = solved_cell.source  # a student who solved everything
    if edit:
        edit(nb)
    nbformat.write(nb, tmp_path / name)
    return tmp_path / name


def test_the_assignment_decides_what_is_graded(tmp_path):
    def drop_train_step(nb):
        nb.cells = [c for c in nb.cells if "def train_step(" not in c.source
                    and "train_step_exercise.check(" not in c.source]
        nb.metadata[STAMP_KEY]["exercises"] = ["generator"]  # and the stamp edited to match
    report = grading.grade(stamped(tmp_path, drop_train_step), run=False)
    assert report["assignment"] == "01_build_the_fc_gan"
    assert [(e["name"], e["score"]) for e in report["exercises"]] == [
        ("generator", 1), ("discriminator", 1), ("losses", 1), ("train_step", 0)]
    assert (report["score"], report["max_score"]) == (3, 4)
    assert "train_step is not defined" in report["exercises"][3]["feedback"]
    assert any("stamp was edited" in n for n in report["notes"])


def test_a_notebook_without_its_stamp(tmp_path):
    def unstamp(nb):
        del nb.metadata[STAMP_KEY]
    # named as the assignment: graded as it, with a note
    by_name = grading.grade(stamped(tmp_path, unstamp, name=FC.name), run=False)
    assert by_name["score"] == 4 and any("no assignment stamp" in n for n in by_name["notes"])
    # named otherwise: reported, not graded, unless the teacher names the assignment
    anonymous = stamped(tmp_path, unstamp)
    with pytest.raises(ValueError, match="names no assignment.*--assignment NAME"):
        grading.grade(anonymous, run=False)
    assert grading.grade(anonymous, assignment="01_build_the_fc_gan", run=False)["score"] == 4


def test_release_stamps_and_can_close_the_solutions(tmp_path):
    release(FC, tmp_path / "open")
    release(FC, tmp_path / "closed", solutions=False)
    opened = nbformat.read(tmp_path / "open" / FC.name, as_version=4)
    closed = nbformat.read(tmp_path / "closed" / FC.name, as_version=4)
    assert opened.metadata[STAMP_KEY] == {"assignment": "01_build_the_fc_gan", "exercises": [
        "generator", "discriminator", "losses", "train_step"], "solutions": True}
    assert closed.metadata[STAMP_KEY]["solutions"] is False
    first = next(c for c in closed.cells if c.cell_type == "code").source
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", first + "\ngenerator_exercise.solution()"],
                         capture_output=True, text=True, env=env, check=True).stdout
    assert "Solutions are closed for this assignment" in out and "class" not in out


def test_a_malformed_result_scores_zero():
    code = ("import os\ndef train_step(*a):\n    for fd in range(3, 64):\n        try:\n"
            "            os.write(fd, b'{\"name\": \"train_step\", \"score\": null, \"feedback\": \"\"}')\n"
            "        except OSError:\n            pass\n    os._exit(0)")
    result = score(replace_cell(solution_cells(), "def train_step(", code), "train_step")
    assert result["score"] == 0 and "ended without a result" in result["feedback"]


def test_the_file_name_wins_over_an_edited_stamp(tmp_path):
    def claim_the_dcgan_assignment(nb):
        nb.metadata[STAMP_KEY] = {"assignment": "02_build_the_dcgan",
                                  "exercises": ["dcgan_generator", "dcgan_discriminator"]}
    report = grading.grade(stamped(tmp_path, claim_the_dcgan_assignment, name=FC.name), run=False)
    assert report["assignment"] == "01_build_the_fc_gan" and report["max_score"] == 4
    assert any("stamp names '02_build_the_dcgan'" in n for n in report["notes"])


def test_release_refuses_a_notebook_whose_stamp_disagrees(tmp_path):
    nb = nbformat.read(FC, as_version=4)
    nb.metadata[STAMP_KEY]["exercises"] = ["generator"]
    nbformat.write(nb, tmp_path / FC.name)
    with pytest.raises(ValueError, match="its stamp lists the exercises"):
        release(tmp_path / FC.name, tmp_path / "out")


BAD_CELLS = {
    # a daemon in a session of its own, holding whatever it inherited open
    "daemon": "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
              "        while True:\n            time.sleep(3600)\n    os._exit(0)",
    "endless": "while True:\n    pass",
    "sleep": "import time\ntime.sleep(10**6)",
    "memory": "import torch\nbig = torch.empty(20 * 1024**3, dtype=torch.uint8).fill_(1)",
    # linear, not exponential: each child sleeps; the process limit stops the loop
    "processes": "import os, time\nfor _ in range(400):\n    if os.fork() == 0:\n"
                 "        time.sleep(600)\n        os._exit(0)",
}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"  # a zombie has ended; only its exit status is left


LEFT_RUNNING = (
    "import os, subprocess, time\n"
    "def note(role, pid):\n    open('pids.txt', 'a').write(f'{role} {pid}\\n')\n"
    "child = os.fork()\nif child == 0:\n    time.sleep(3600)\n"
    # a daemon: a session of its own, its parent gone
    "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
    "        note('daemon', os.getpid())\n        time.sleep(3600)\n    os._exit(0)\n"
    # another program in a session of its own: its command line is its own
    "server = subprocess.Popen(['sleep', '3600'], start_new_session=True)\n"
    "note('child', child)\nnote('kernel', os.getpid())\nnote('server', server.pid)\n"
    "while 'daemon' not in open('pids.txt').read():\n    time.sleep(0.1)")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("ends", ["finished", "stopped", "runner killed"])
def test_nothing_a_notebook_started_outlives_its_run(tmp_path, monkeypatch, ends):
    # Without a sandbox user (grading as yourself), the kernel runs in a session of its
    # own: stopping the worker once left it and 400 forks running as root.
    from gan_helpers.grading import sandbox

    cells = [LEFT_RUNNING] + (["1/0", "import time\ntime.sleep(10**6)"] if ends != "finished" else [])
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    (tmp_path / "home").mkdir()
    path = tmp_path / "home" / "returned.ipynb"
    nbformat.write(nb, path)
    # Not the notebook's: in a session of its own, naming a folder that starts alike.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)",
                                  str(tmp_path / "home2" / "x")], start_new_session=True)
    pids = {}
    try:
        if ends == "runner killed":  # the grader's limit before the runner's own
            monkeypatch.setattr(sandbox, "_GRACE_SECONDS", -10.0)
        errors = sandbox.run_notebook(path, cell_timeout=600, total_seconds=30, uid=None)
        if (path.parent / "pids.txt").exists():
            lines = (path.parent / "pids.txt").read_text().splitlines()
            pids = {role: int(pid) for role, pid in (line.split() for line in lines)}
        assert ("did not finish within 30 s" in " ".join(errors)) == (ends != "finished"), errors
        # Stopped by the runner, a notebook keeps the errors of the cells before the limit.
        assert ("cell 2: ZeroDivisionError" in " ".join(errors)) == (ends == "stopped"), errors
        assert sorted(pids) == ["child", "daemon", "kernel", "server"]  # all started
        # The runner ends all four. Killed, it cannot: the grader then finds the three
        # that keep the kernel's command line, and the server escapes.
        alive = sorted(role for role, pid in pids.items() if _alive(pid))
        assert alive == (["server"] if ends == "runner killed" else []), (alive, pids)
        if ends != "runner killed":  # and reaped by the runner, not left as zombies
            assert not [role for role, pid in pids.items() if Path(f"/proc/{pid}").exists()]
        assert bystander.poll() is None
    finally:
        for pid in pids.values():
            if _alive(pid):
                os.kill(pid, 9)
        bystander.kill()
        bystander.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_nothing_a_checked_function_started_outlives_its_check(tmp_path, monkeypatch):
    # As yourself (no sandbox user, whose processes are all ended): a daemon in a
    # session of its own once outlived the check's process group.
    monkeypatch.setattr(grading.scoring, "sandbox_available", lambda: False)
    pids = tmp_path / "pids.txt"
    code = ("import os, time\ndef train_step(*a):\n    if os.fork() == 0:\n"
            "        os.setsid()\n        if os.fork() == 0:\n"
            f"            open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
            "            time.sleep(3600)\n        os._exit(0)\n"
            f"    while not open({str(pids)!r}, 'a+').tell():\n        time.sleep(0.1)\n"
            "    raise ValueError('no step')")
    try:
        result = score(replace_cell(solution_cells(), "def train_step(", code), "train_step")
        assert result["score"] == 0 and "no step" in result["feedback"], result
        (daemon,) = [int(line) for line in pids.read_text().split()]
        assert not Path(f"/proc/{daemon}").exists()  # killed and reaped
    finally:
        for line in pids.read_text().split() if pids.exists() else []:
            if _alive(int(line)):
                os.kill(int(line), 9)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_a_hostile_notebook_costs_its_own_cells_only(tmp_path):
    path = stamped(tmp_path, lambda nb: nb.cells.extend(
        nbformat.v4.new_code_cell(code) for code in BAD_CELLS.values()))
    report = grading.grade(path, cell_timeout=10)
    assert report["score"] == 4  # scored before it ran, and out of its reach
    errors = "\n".join(report["cell_errors"])
    assert errors.count("stopped at its 10-s limit") == 2  # the loop and the sleep
    assert "memory" in errors.lower()
    if grading.sandbox_available() or not grading._running_as_root():
        # root is exempt from the process limit; a sandbox user or you are not
        assert "BlockingIOError" in errors or "Resource temporarily unavailable" in errors
