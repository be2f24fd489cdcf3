import json
import re
from pathlib import Path

import nbformat
import pytest

from gan_helpers.assignments import BEGIN, release, strip_solutions
from gan_helpers.grading import grade
from gan_helpers.cli import main

SOLUTIONS = Path(__file__).resolve().parent.parent / "notebooks" / "assignments"


def solution_lines(path):
    lines = []
    for cell in nbformat.read(path, as_version=4).cells:
        for block in re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", cell.source, re.S):
            lines += [line.strip() for line in block.splitlines() if line.strip()]
    return lines


def test_strip_solutions_keeps_indentation():
    src = "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n"
    assert strip_solutions(src) == 'def f(x):\n    raise NotImplementedError("your code here")\n'
    with pytest.raises(ValueError, match="unmatched"):
        strip_solutions("### BEGIN SOLUTION\nx = 1\n")
    # An END missing between two solutions must not swallow the code between them.
    with pytest.raises(ValueError, match="unmatched"):
        strip_solutions("### BEGIN SOLUTION\nx = 1\ny = 2\n### BEGIN SOLUTION\nz = 3\n### END SOLUTION\n")


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    dest = tmp_path_factory.mktemp("released")
    assert main(["release", str(SOLUTIONS), str(dest)]) == 0
    return dest


def test_release_leaves_no_solution(released):
    sources = sorted(SOLUTIONS.glob("*.ipynb"))
    assert len(sources) >= 2
    for src in sources:
        text = (released / src.name).read_text()
        assert BEGIN not in text and "NotImplementedError" in text
        assert "NBVAL" in src.read_text() and "NBVAL" not in text  # CI's markers stay behind
        for line in solution_lines(src):
            if len(line) > 12:  # skip generic lines such as "return x"
                assert line not in text, f"{src.name} leaks: {line}"
        nb = nbformat.read(released / src.name, as_version=4)
        assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code")
        assert "widgets" not in nb.metadata


def test_release_refuses_in_place():
    with pytest.raises(ValueError, match="must differ"):
        release(SOLUTIONS, SOLUTIONS)
    with pytest.raises(ValueError, match="must differ"):
        release(SOLUTIONS / "01_build_the_fc_gan.ipynb", SOLUTIONS)


def test_release_one_notebook(tmp_path, capsys):
    one = SOLUTIONS / "01_build_the_fc_gan.ipynb"
    assert main(["release", str(one), str(tmp_path / "week1")]) == 0
    assert [p.name for p in (tmp_path / "week1").iterdir()] == [one.name]
    text = (tmp_path / "week1" / one.name).read_text()
    assert BEGIN not in text and "NotImplementedError" in text
    assert "(note:" not in capsys.readouterr().out


def test_release_refuses_a_notebook_that_is_no_assignment(tmp_path, capsys):
    nb = nbformat.read(SOLUTIONS.parent / "03_bce_loss.ipynb", as_version=4)
    del nb.metadata["gan_course"]  # a notebook of the teacher's own, say
    (tmp_path / "mine").mkdir()
    course = tmp_path / "mine" / "03_bce_loss.ipynb"
    nbformat.write(nb, course)
    with pytest.raises(ValueError, match="03_bce_loss.ipynb is not one of the course's assignments"):
        release(course, tmp_path)
    assert main(["release", str(course), str(tmp_path / "again")]) == 1
    assert "no 'gan_course' stamp naming one of 01_build_the_fc_gan" in capsys.readouterr().err
    assert not (tmp_path / "again").exists()


def test_release_with_a_marker_missing_writes_nothing(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    good = nbformat.read(SOLUTIONS / "01_build_the_fc_gan.ipynb", as_version=4)
    nbformat.write(good, src / "a.ipynb")
    at = next(i for i, c in enumerate(good.cells) if "### END SOLUTION" in c.source)
    good.cells[at].source = good.cells[at].source.replace("### END SOLUTION", "", 1)
    nbformat.write(good, src / "b.ipynb")
    assert main(["release", str(src), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"b.ipynb, cell {at + 1}:" in err and "without its" in err
    assert not (tmp_path / "out").exists()  # a.ipynb, first in order, was not written either
    assert main(["release", str(tmp_path / "nothere"), str(tmp_path / "out")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_release_again_keeps_the_work_done_in_the_copies(tmp_path, capsys):
    mine = tmp_path / "my-assignments"
    assert main(["release", str(SOLUTIONS), str(mine)]) == 0
    work = mine / "01_build_the_fc_gan.ipynb"
    nb = nbformat.read(work, as_version=4)
    nb.cells[3].source = "# a student's own generator\n" + nb.cells[3].source
    nbformat.write(nb, work)
    before = work.read_bytes()
    capsys.readouterr()
    assert main(["release", str(SOLUTIONS), str(mine)]) == 1  # the same command again
    err = capsys.readouterr().err
    assert "01_build_the_fc_gan.ipynb" in err and "nothing was written" in err and "--force" in err
    assert work.read_bytes() == before
    assert main(["release", str(SOLUTIONS), str(mine), "--force"]) == 0
    assert "a student's own generator" not in work.read_text()


def test_solutions_score_full_marks_and_run_cleanly():
    report = grade(SOLUTIONS / "01_build_the_fc_gan.ipynb")
    assert report["max_score"] == 4 and report["score"] == 4, report
    assert [e["name"] for e in report["exercises"]] == ["generator", "discriminator", "losses", "train_step"]
    assert report["assignment"] == "01_build_the_fc_gan" and report["cell_errors"] == []


def test_a_renamed_class_scores_zero_and_keeps_the_total(tmp_path):
    # A student renames the generator class and deletes the train_step check cell: the
    # generator scores 0 and says why, train_step is still graded, and the total stays 4.
    nb = nbformat.read(SOLUTIONS / "01_build_the_fc_gan.ipynb", as_version=4)
    nb.cells = [c for c in nb.cells if "train_step_exercise.check(" not in c.source]
    for cell in nb.cells:
        cell.source = cell.source.replace("class FCGenerator(", "class MyGenerator(")
    nbformat.write(nb, tmp_path / "renamed.ipynb")
    report = grade(tmp_path / "renamed.ipynb", run=False)
    scores = {e["name"]: e["score"] for e in report["exercises"]}
    assert scores == {"generator": 0, "discriminator": 1, "losses": 1, "train_step": 1}
    assert (report["score"], report["max_score"]) == (3, 4)
    assert "FCGenerator is not defined" in report["exercises"][0]["feedback"]


def test_released_copy_scores_zero_without_crashing(released, capfd):
    assert main(["grade", str(released / "01_build_the_fc_gan.ipynb"), "--json"]) == 0
    captured = capfd.readouterr()  # at the file descriptors: the kernel's stderr too
    out = captured.out.strip().splitlines()
    assert len(out) == 1
    # ipykernel 7.3+ warns of unencrypted sockets unless the kernel gets CurveZMQ keys.
    assert "without encryption" not in captured.err
    report = json.loads(out[0])
    assert report["score"] == 0 and report["max_score"] == 4
    assert set(report) == {"notebook", "assignment", "score", "max_score", "exercises", "notes"}
    assert all("not implemented yet" in e["feedback"] for e in report["exercises"])


def test_a_class_is_graded_in_one_command(released, tmp_path, capsys):
    # Three returns of the DCGAN assignment, two at a time: one right, one untouched, one
    # that is not a notebook. The bad file is reported and the other two still graded.
    broken = tmp_path / "carol" / "02_build_the_dcgan.ipynb"
    broken.parent.mkdir()
    broken.write_text("{ not json")
    returns = [SOLUTIONS / "02_build_the_dcgan.ipynb", released / "02_build_the_dcgan.ipynb", broken]
    sheet = tmp_path / "grades.csv"
    assert main(["grade", *map(str, returns), "--csv", str(sheet), "--jobs", "2"]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("error: ") == 1 and "carol" in captured.err
    summary = captured.out.split("Summary, 3 notebooks:\n")[1].splitlines()
    assert [line.split()[-1] for line in summary[:2]] == ["2/2", "0/2"]
    assert summary[2].endswith("not graded (see the error above)")

    import csv

    rows = list(csv.DictReader(sheet.open()))
    assert [(r["score"], r["max_score"], r["dcgan_generator"], r["dcgan_discriminator"])
            for r in rows] == [("2", "2", "1", "1"), ("0", "2", "0", "0"), ("", "", "", "")]
    assert rows[0]["error"] == "" and "is not a readable Jupyter notebook" in rows[2]["error"]
    assert [r["notebook"] for r in rows] == list(map(str, returns))


def test_endless_loop_and_exceptions_are_graded(tmp_path, monkeypatch):
    monkeypatch.delenv("GAN_COURSE_FAST", raising=False)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import torch\nfrom torch import nn"),
        # grading runs the notebook in fast mode, whatever the teacher's shell has
        nbformat.v4.new_code_cell("import os\nassert os.environ['GAN_COURSE_FAST'] == '1', 'slow'"),
        nbformat.v4.new_code_cell("while True:\n    pass"),
        nbformat.v4.new_code_cell("def train_step(*args):\n    raise RuntimeError('oops')"),
        nbformat.v4.new_code_cell("1 / 0"),
    ]
    path = tmp_path / "student.ipynb"
    nbformat.write(nb, path)
    report = grade(path, cell_timeout=3, assignment="01_build_the_fc_gan")
    assert report["score"] == 0 and report["max_score"] == 4
    assert "oops" in report["exercises"][3]["feedback"]
    assert any(e.startswith("cell 5: ZeroDivisionError") for e in report["cell_errors"])
    assert any(e.startswith("cell 3: ") for e in report["cell_errors"]), report["cell_errors"]
    assert not any("GAN_COURSE_FAST" in e or "slow" in e for e in report["cell_errors"])


def test_the_checks_are_not_held_to_the_students_cell_timeout(tmp_path):
    # A right generator that is slow to build: under a 4-s limit per cell the checks
    # still run to the end, and the limit still holds for the student's own cells. (A
    # 1-s limit can interrupt the first cell's `import torch` in a cold fresh install,
    # which kills the kernel before the slow cell is reached.)
    nb = nbformat.read(SOLUTIONS / "01_build_the_fc_gan.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "class FCGenerator(" in c.source)
    nb.cells[at].source = nb.cells[at].source.replace(
        "super().__init__()", "super().__init__()\n        import time; time.sleep(5)", 1)
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell("FCGenerator()"))
    path = tmp_path / "slow.ipynb"
    nbformat.write(nb, path)
    report = grade(path, cell_timeout=4)
    assert report["exercises"][0]["score"] == 1, report
    assert any(e.startswith(f"cell {at + 2}: ") for e in report["cell_errors"]), report["cell_errors"]


def test_grade_refuses_what_is_not_a_notebook(tmp_path, capsys):
    not_a_notebook = tmp_path / "alice.ipynb"
    not_a_notebook.write_text("def generator(): ...\n")  # a .py saved under the wrong name
    with pytest.raises(ValueError, match=r"alice.ipynb is not a readable Jupyter notebook"):
        grade(not_a_notebook)
    with pytest.raises(ValueError, match=r"notebook .*bob.ipynb does not exist"):
        grade(tmp_path / "bob.ipynb")
    assert main(["grade", str(not_a_notebook)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "pass the .ipynb file itself" in err
    assert err.count("\n") == 1


def test_grade_refuses_a_notebook_of_no_assignment(tmp_path):
    lesson = tmp_path / "lesson.ipynb"  # a course notebook, say, not an assignment
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("from gan_helpers.models import FCGenerator\nG = FCGenerator()")]
    nbformat.write(nb, lesson)
    with pytest.raises(ValueError, match=r"lesson.ipynb names no assignment"):
        grade(lesson)
