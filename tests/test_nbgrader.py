"""The assignments under nbgrader itself: its student copies are ours, and its autograder
gives each exercise the score that `grade` gives it."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from gan_helpers.assignments import release
from gan_helpers.cli import main

pytest.importorskip("nbgrader")

SOLUTIONS = Path(__file__).resolve().parent.parent / "notebooks" / "assignments"
FC = SOLUTIONS / "01_build_the_fc_gan.ipynb"
# docs/teaching.md gives the same two lines: nbgrader's stub then reads as ours.
CONFIG = """c = get_config()
c.CourseDirectory.course_id = "gan-course"
c.ClearSolutions.code_stub = {"python": 'raise NotImplementedError("your code here")'}
"""
MISTAKES = {  # one planted mistake per exercise, two exercises per returned copy
    "mistakes_a": {
        "generator": ("return torch.tanh(self.out(h)).reshape(-1, 1, 28, 28)",
                      "return self.out(h).reshape(-1, 1, 28, 28)"),
        "train_step": ("discriminator(fake.detach())", "discriminator(fake)"),
    },
    "mistakes_b": {
        "discriminator": ("nn.Linear(512, 256), nn.LeakyReLU(0.2)", "nn.Linear(512, 256), nn.ReLU()"),
        # in bce only, which the training step does not use
        "losses": ("return -(t * torch.log(o)", "return (t * torch.log(o)"),
    },
}


def nbgrader(course: Path, *args: str) -> None:
    # nbgrader runs its `alembic` by name, from the environment's bin folder; the
    # notebooks it executes run in the course's fast mode, as `grade` runs them.
    env = {**os.environ, "GAN_COURSE_FAST": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def code_without_nbval(nb) -> list[str]:
    return [re.sub(r"^[ \t]*#[ \t]*NBVAL_\w+[ \t]*\n?", "", c.source, flags=re.M)
            for c in nb.cells if c.cell_type == "code"]


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    course = tmp_path_factory.mktemp("course")
    (course / "nbgrader_config.py").write_text(CONFIG)
    (course / "source" / "fc").mkdir(parents=True)
    shutil.copy(FC, course / "source" / "fc" / FC.name)
    nbgrader(course, "generate_assignment", "fc", "--force")
    student_copy = course / "release" / "fc" / FC.name
    returns = {"untouched": student_copy.read_text(), "solutions": FC.read_text()}
    for name, edits in MISTAKES.items():
        text = FC.read_text()
        for old, new in edits.values():
            assert json.dumps(old)[1:-1] in text, old
            text = text.replace(json.dumps(old)[1:-1], json.dumps(new)[1:-1], 1)
        returns[name] = text
    for student, text in returns.items():
        folder = course / "submitted" / student / "fc"
        folder.mkdir(parents=True)
        (folder / FC.name).write_text(text)
    nbgrader(course, "autograde", "fc", "--create", "--force")
    return course


def test_nbgrader_releases_the_same_student_copy(course, tmp_path):
    release(FC, tmp_path)
    ours = nbformat.read(tmp_path / FC.name, as_version=4)
    theirs = nbformat.read(course / "release" / "fc" / FC.name, as_version=4)
    assert code_without_nbval(theirs) == code_without_nbval(ours)


def test_nbgrader_autograde_agrees_with_grade(course, capsys):
    from nbgrader.api import Gradebook

    expected = {"untouched": {e: 0 for e in ("generator", "discriminator", "losses", "train_step")},
                "solutions": {e: 1 for e in ("generator", "discriminator", "losses", "train_step")}}
    for name, edits in MISTAKES.items():
        expected[name] = {e: int(e not in edits) for e in expected["solutions"]}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for student, scores in expected.items():
            notebook = gradebook.find_submission_notebook(FC.stem, "fc", student)
            theirs = {g.name.removesuffix("_check"): g.score for g in notebook.grades}
            capsys.readouterr()
            path = course / "submitted" / student / "fc" / FC.name
            assert main(["grade", str(path), "--json", "--assignment", FC.stem, "--no-run"]) == 0
            ours = {e["name"]: e["score"] for e in json.loads(capsys.readouterr().out)["exercises"]}
            assert theirs == ours == scores, student
