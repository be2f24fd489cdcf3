"""The notebooks as a student meets them: numbered in order, short prose cells."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
WORD = re.compile(r"[^\s|]*[A-Za-z0-9][^\s|]*")  # a table's bars and rules are no words
MAX_WORDS = 160  # "about 150 words" a markdown cell


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def test_the_notebooks_are_numbered_one_to_n_and_their_titles_agree():
    numbers = [int(p.name.split("_")[0]) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(NOTEBOOKS) + 1))
    for number, path in zip(numbers, NOTEBOOKS):
        title = "".join(_cells(path)[0]["source"]).splitlines()[0]
        assert title.startswith(f"# {number}. "), f"{path.name} opens with {title!r}"


@pytest.mark.parametrize("path", NOTEBOOKS + sorted(NOTEBOOKS[0].parent.glob("assignments/*.ipynb")),
                         ids=lambda p: p.name)
def test_markdown_cells_stay_short(path):
    long = {i: len(WORD.findall("".join(c["source"]))) for i, c in enumerate(_cells(path))
            if c["cell_type"] == "markdown"}
    assert {i: n for i, n in long.items() if n > MAX_WORDS} == {}
