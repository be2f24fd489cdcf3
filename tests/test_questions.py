"""The questions that end each course notebook: their checks, their release and their grading."""

import re
from pathlib import Path

import nbformat
import pytest

from gan_helpers.assignments import ASSIGNMENTS, STAMP_KEY, release
from gan_helpers.checks import EXERCISES, NotYet
from gan_helpers.checks import questions as q
from gan_helpers.grading import grade
from gan_helpers.grading.definitions import definitions

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
COURSE = sorted(NOTEBOOKS.glob("*.ipynb"))
BY_NAME = {e.name: e for e in q.QUESTIONS}


def answers_in(path: Path) -> dict[str, str]:
    """name -> the answer's source text, from the solution cells of a notebook."""
    text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
    return dict(re.findall(r"### BEGIN SOLUTION\n(\w+) = (.+)\n### END SOLUTION", text))


def test_every_course_notebook_ends_with_its_checked_questions():
    assert len(COURSE) == 6
    asked = []
    for path in COURSE:
        nb = nbformat.read(path, as_version=4)
        names = list(ASSIGNMENTS[path.stem])
        assert nb.metadata[STAMP_KEY] == {"assignment": path.stem, "exercises": names}
        assert len(names) >= 2 and list(answers_in(path)) == names
        checks = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
        assert [c.metadata["nbgrader"]["grade_id"] for c in checks] == [f"{n}_check" for n in names]
        # the questions come last: after the last check only prose follows
        last = nb.cells.index(checks[-1])
        assert all(c.cell_type == "markdown" for c in nb.cells[last + 1:])
        asked += names
    assert sorted(asked) == sorted(BY_NAME) and all(e in EXERCISES for e in q.QUESTIONS)


@pytest.mark.parametrize("path", COURSE, ids=lambda p: p.stem)
def test_the_notebooks_answers_pass_their_checks(path):
    for name, source in answers_in(path).items():
        result = BY_NAME[name].result(eval(source))
        assert result.passed, result
        assert result.feedback  # the working, shown: a sum for a number
        assert isinstance(eval(source), str) or "=" in result.feedback[0]


@pytest.mark.parametrize("name, wrong, says", [
    ("scaled_191", 191 / 255, "ToTensor's division by 255 only"),
    ("scaled_191", 381, "not on the byte itself"),
    ("seed_batches_of_128", 468, "drops the last, smaller batch"),
    ("seed_batches_of_128", 468.75, "whole number"),
    ("scaled_191", 0.5, "is not it"),  # three decimals asked: 0.5 is too coarse
    ("last_layer_parameters", 512 * 3072, "also has a bias"),
    ("last_layer_parameters", 402_192, "MNIST's last layer"),
    ("optimal_d_value", 0.25, "p_g's share"),
    ("optimal_d_value", 3, "not the ratio"),
    ("d_loss_value", 0.3285, "halves the sum"),
    ("d_loss_value", 0.857, "its term is -log(1 - 0.2)"),
    ("d_loss_value", 0.0713, "base-10 logs"),
    ("smoothed_least_loss", 0, "never reaches 0"),
    ("smoothed_least_loss", 0.105, "term alone"),
    ("optimal_d_where_g_denser", 0.75, "share of fakes"),
    ("optimal_d_where_g_denser", 0.5, "densities are equal"),
    ("collapsed_batch_std", 1, "identical points have none"),
    ("without_detach", "b", "the value is the same"),
    ("without_detach", "d", "run it and read the error"),
    ("without_detach", " A ", "something does change"),
    ("gradient_ratio", 1 / 999, "the other way round"),
    ("gradient_ratio", 0.999, "gradient alone"),
    ("transposed_conv_size", 14, "does not simply double"),
    ("transposed_conv_size", 15, "left out the padding"),
    ("strided_conv_size", 14, "with padding 1"),
    ("strided_conv_size", 12, "left out the + 1"),
])
def test_a_usual_wrong_answer_is_named(name, wrong, says):
    result = BY_NAME[name].result(wrong)
    assert not result.passed and says in result.feedback[0], result


class AlwaysEqual(float):
    def __eq__(self, other):
        return True


@pytest.mark.parametrize("answer, says", [
    (..., "still `...`"), (True, "not a bool"), ("0.498", "not a str"),
    (float("nan"), "finite"), (AlwaysEqual(0.0), "not a AlwaysEqual"), (0.7, "is not it"),
])
def test_an_answer_that_is_not_a_plain_number_is_refused(answer, says):
    result = q.scaled_191_exercise.result(answer)
    assert not result.passed and says in result.feedback[0], result


def test_a_prediction_must_be_one_of_the_letters():
    for answer in ("e", 3, ["c"], ...):
        assert not q.without_detach_exercise.result(answer).passed


def test_the_detach_answer_comes_from_running_the_seeds_step():
    # The check finds the answer by running the seed's two steps without detach.
    assert q._without_detach() == "c"


def test_check_raises_until_solved_and_solution_shows_the_working(capsys):
    with pytest.raises(NotYet):
        q.gradient_ratio_exercise.check(100)
    assert q.gradient_ratio_exercise.check(999).passed
    q.gradient_ratio_exercise.solution()
    assert "Worked answer" in capsys.readouterr().out


def test_the_grader_reads_numbers_and_arithmetic_but_no_calls():
    modules, notes = definitions(["a = 0.5", "b = (191 / 255 - 0.5) / 0.5", "c = -1 // 2 % 3",
                                  "d = 9 ** 9 ** 9", "e = round(0.4981, 3)", "f = 'c'"],
                                 names={"d", "e"})
    kept = {m.body[0].targets[0].id for _, m in modules}
    assert kept == {"a", "b", "c", "f"}
    assert len(notes) == 2 and all("arithmetic on numbers" in n for n in notes)


def test_a_chain_of_thousands_of_sums_is_skipped_not_a_crash():
    # Each + nests one level deeper: a student's 5,000-term sum must not stop the grading.
    modules, notes = definitions(["x = " + "+".join(["1"] * 5000), "y = 2"], names={"x"})
    assert [m.body[0].targets[0].id for _, m in modules] == ["y"]
    assert len(notes) == 1 and "cell 1" in notes[0]


@pytest.fixture(scope="module")
def released_course(tmp_path_factory):
    dest = tmp_path_factory.mktemp("course")
    written = release(NOTEBOOKS, dest)
    assert sorted(p.name for p in written) == [p.name for p in COURSE]
    return dest


def test_release_leaves_each_answer_blank_under_its_name(released_course):
    for path in COURSE:
        nb = nbformat.read(released_course / path.name, as_version=4)
        text = "\n".join(c.source for c in nb.cells)
        for name, answer in answers_in(path).items():
            assert f"{name} = ...  # your answer" in text
            assert f"{name} = {answer}" not in text
        assert all(c.outputs == [] for c in nb.cells if c.cell_type == "code")


def test_a_returned_notebook_is_graded_by_its_answers(released_course, tmp_path):
    blank = grade(released_course / "05_training_the_fc_gan.ipynb", run=False)
    assert (blank["score"], blank["max_score"]) == (0, 2)
    assert all("still `...`" in e["feedback"] for e in blank["exercises"])

    nb = nbformat.read(released_course / "05_training_the_fc_gan.ipynb", as_version=4)
    for cell in nb.cells:
        cell.source = cell.source.replace("without_detach = ...", 'without_detach = "c"')
        cell.source = cell.source.replace("gradient_ratio = ...", "gradient_ratio = 0.999 / 0.001")
    nbformat.write(nb, tmp_path / "05_training_the_fc_gan.ipynb")
    report = grade(tmp_path / "05_training_the_fc_gan.ipynb", run=False)
    assert (report["score"], report["max_score"]) == (2, 2), report


def test_a_class_posing_as_an_answer_scores_zero(released_course, tmp_path):
    # A student defines the answer's name as a class that equals everything: the grader
    # runs the class statement, and the check refuses what is not a plain number.
    nb = nbformat.read(released_course / "06_dcgan.ipynb", as_version=4)
    for cell in nb.cells:
        cell.source = cell.source.replace(
            "transposed_conv_size = ...  # your answer",
            "class transposed_conv_size(float):\n    def __eq__(self, other):\n        return True")
    nbformat.write(nb, tmp_path / "06_dcgan.ipynb")
    report = grade(tmp_path / "06_dcgan.ipynb", run=False)
    scores = {e["name"]: (e["score"], e["feedback"]) for e in report["exercises"]}
    assert scores["transposed_conv_size"][0] == 0
    assert "should be a number" in scores["transposed_conv_size"][1]
