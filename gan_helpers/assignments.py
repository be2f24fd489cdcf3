"""Classroom assignments: the assignments, and the student copies of their solutions.

``ASSIGNMENTS`` says which exercises (``gan_helpers.checks``) each assignment grades,
one point each. Each solution notebook in ``notebooks/assignments/`` carries the same
list in its metadata (its *stamp*), and its solutions sit between nbgrader's markers,
``### BEGIN SOLUTION`` and ``### END SOLUTION``, with nbgrader's cell metadata, so the
same notebooks work with nbgrader.

``release(src, dest_dir)`` writes each notebook (one, or a folder's) with every solution
replaced by a stub that raises ``NotImplementedError``, all outputs and execution counts
cleared and the saved widget state dropped, and stamps it with its assignment, checked
against ``ASSIGNMENTS``. ``gan_helpers.grading`` grades the returns.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

ASSIGNMENTS = {
    "01_build_the_fc_gan": ("generator", "discriminator", "losses", "train_step"),
    "02_build_the_dcgan": ("dcgan_generator", "dcgan_discriminator"),
    # the questions that end each course notebook (gan_helpers.checks.questions)
    "01_data_and_the_game": ("scaled_191", "seed_batches_of_128"),
    "02_architecture": ("last_layer_parameters", "optimal_d_value"),
    "03_bce_loss": ("d_loss_value", "smoothed_least_loss"),
    "04_gan_in_2d": ("optimal_d_where_g_denser", "collapsed_batch_std"),
    "05_training_the_fc_gan": ("without_detach", "gradient_ratio"),
    "06_dcgan": ("transposed_conv_size", "strided_conv_size"),
}
POINTS = 1  # per exercise
STAMP_KEY = "gan_course"  # notebook metadata: {"assignment": NAME, "exercises": [...]}
CLOSE_SOLUTIONS = ("from gan_helpers.checks import close_solutions\n"
                   "close_solutions()  # released without solutions\n")
BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
CODE_STUB = 'raise NotImplementedError("your code here")'
TEXT_STUB = "YOUR ANSWER HERE"
_SOLUTION = re.compile(
    r"^(?P<indent>[ \t]*)" + re.escape(BEGIN) + r"[^\n]*\n.*?^[ \t]*" + re.escape(END) + r"[^\n]*$",
    re.DOTALL | re.MULTILINE,
)
_ANSWER = re.compile(r"([A-Za-z_]\w*)[ \t]*=[ \t]*[^\n=]+")  # NAME = VALUE, one line
# nbval's markers (e.g. "# NBVAL_CHECK_OUTPUT") serve the course's CI, not the students.
_NBVAL_MARKER = re.compile(r"^[ \t]*#[ \t]*NBVAL_\w+[ \t]*\n?", re.MULTILINE)


def is_literal(code: str | ast.AST | None) -> bool:
    """Whether ``code`` (source text or a parsed expression) is a plain Python literal."""
    try:
        ast.literal_eval(code.strip() if isinstance(code, str) else code)
        return True
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False


def strip_solutions(source: str, stub: str = CODE_STUB) -> str:
    """Replace each BEGIN/END SOLUTION block in ``source`` with ``stub`` at the block's
    indentation; a code block that is one assignment (a question's answer,
    ``scaled_191 = 0.498``) keeps its name: ``scaled_191 = ...  # your answer``. Raises
    ValueError on an unmatched marker."""
    def replace(block: re.Match) -> str:
        if block.group(0).count(BEGIN) > 1:  # a BEGIN whose END is missing: keep its code
            raise ValueError(f"unmatched '{BEGIN}' / '{END}' marker in:\n{source}")
        answer = _ANSWER.fullmatch(block.group(0).split("\n", 1)[1].rsplit("\n", 1)[0].strip())
        if stub == CODE_STUB and answer and is_literal(answer.group(0).split("=", 1)[1]):
            return block.group("indent") + f"{answer.group(1)} = ...  # your answer"
        return block.group("indent") + stub

    stripped = _SOLUTION.sub(replace, source)
    if BEGIN in stripped or END in stripped:
        raise ValueError(f"unmatched '{BEGIN}' / '{END}' marker in:\n{source}")
    return stripped


def read_notebook(path: str | os.PathLike) -> nbformat.NotebookNode:
    """``nbformat.read`` (version 4), with a ValueError naming the file when it is
    missing or is not a Jupyter notebook (a student's returned file can be anything)."""
    import nbformat

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"notebook {path} does not exist; check the path")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as err:  # nbformat raises several kinds (NotJSONError, KeyError, ...)
        first = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise ValueError(
            f"{path} is not a readable Jupyter notebook ({first}); pass the .ipynb file "
            "itself, as saved by Jupyter"
        ) from err


def stamp_of(nb, src: Path) -> dict:
    """The assignment stamp of solution notebook ``nb``, checked against
    ``ASSIGNMENTS``; a ValueError naming ``src`` when it is missing or differs."""
    stamp = nb.metadata.get(STAMP_KEY)
    name = stamp.get("assignment") if isinstance(stamp, dict) else None
    if name not in ASSIGNMENTS:
        raise ValueError(
            f"{src} is not one of the course's assignments: its metadata has no "
            f"{STAMP_KEY!r} stamp naming one of {', '.join(ASSIGNMENTS)}")
    if list(stamp.get("exercises", [])) != list(ASSIGNMENTS[name]):
        raise ValueError(
            f"{src}: its stamp lists the exercises {stamp.get('exercises')}, but {name} grades "
            f"{list(ASSIGNMENTS[name])}; make them agree (gan_helpers.assignments.ASSIGNMENTS)")
    return {"assignment": name, "exercises": list(ASSIGNMENTS[name])}


def _student_copy(src: Path, solutions: bool = True) -> tuple[nbformat.NotebookNode, int]:
    """The student copy of notebook ``src``, in memory, and how many solutions it lost.
    Without ``solutions``, its exercises' ``.solution()`` says they are closed."""
    nb = read_notebook(src)
    stamp = stamp_of(nb, src)
    removed = 0
    for number, cell in enumerate(nb.cells, start=1):
        if BEGIN in cell.source or END in cell.source:
            removed += cell.source.count(BEGIN)
            try:
                cell.source = strip_solutions(cell.source, CODE_STUB if cell.cell_type == "code" else TEXT_STUB)
            except ValueError:
                raise ValueError(
                    f"{src}, cell {number}: a '{BEGIN}' without its '{END}' or the other way "
                    "round; give each solution both markers, each on its own line"
                ) from None
        if cell.cell_type == "code":
            cell.source = _NBVAL_MARKER.sub("", cell.source)
            cell.outputs = []
            cell.execution_count = None
        cell.pop("attachments", None)
    nb.metadata.pop("widgets", None)
    nb.metadata[STAMP_KEY] = {**stamp, "solutions": solutions}
    if not solutions:
        first = next(c for c in nb.cells if c.cell_type == "code")
        first.source = CLOSE_SOLUTIONS + first.source
    return nb, removed


def release_notebook(
    src: str | os.PathLike, dest: str | os.PathLike, solutions: bool = True
) -> int:
    """Write the student copy of one notebook; returns the number of solutions removed."""
    import nbformat

    nb, removed = _student_copy(Path(src), solutions)
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    return removed


def release(
    src: str | os.PathLike, dest_dir: str | os.PathLike, overwrite: bool = False,
    solutions: bool = True,
) -> dict[Path, int]:
    """Release one notebook, or every notebook in the folder ``src``, into ``dest_dir``;
    returns each written path with the number of solutions removed from it.

    Every copy is made in memory before any is written, so a marker without its partner
    in any notebook (ValueError naming the notebook and cell) leaves ``dest_dir`` as it
    was. A notebook already in ``dest_dir`` may hold a student's work, so nothing is
    written when any would be replaced (ValueError naming them), unless ``overwrite``.
    ``solutions=False`` releases without ``.solution()`` (``release --no-solutions``)."""
    import nbformat

    src, dest_dir = Path(src), Path(dest_dir)
    if not src.exists():
        raise ValueError(f"{src} does not exist: give a solution notebook or a folder of them")
    notebooks = [src] if src.is_file() else sorted(src.glob("*.ipynb"))
    if not notebooks:
        raise ValueError(f"no notebooks (*.ipynb) in {src}")
    if dest_dir.resolve() == notebooks[0].parent.resolve():
        raise ValueError("DEST_DIR must differ from the solutions' folder: releasing in place "
                         "would delete the solutions")
    existing = [dest_dir / nb.name for nb in notebooks if (dest_dir / nb.name).exists()]
    if existing and not overwrite:
        names = ", ".join(p.name for p in existing)
        raise ValueError(
            f"{dest_dir} already has {names}, perhaps with work done in them; nothing was "
            "written. Release into another folder, or replace them with --force "
            "(overwrite=True in Python)."
        )
    copies = [(dest_dir / path.name, *_student_copy(path, solutions)) for path in notebooks]
    dest_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for target, nb, removed in copies:
        nbformat.write(nb, target)
        written[target] = removed
    return written
