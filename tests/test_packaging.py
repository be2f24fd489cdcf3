"""The two ways to install the course ask for the same packages."""

import re
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # conda-forge's name where it differs from PyPI's


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_every_runtime_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {_name(d) for d in env["dependencies"] if isinstance(d, str)}
    wanted = {CONDA_NAMES.get(_name(d), _name(d)) for d in project["dependencies"]}
    # Missing ones would still come, from PyPI through `pip install -e .`, beside conda's.
    assert wanted - conda == set(), "add these to environment.yml (conda-forge names)"
    assert {"pytest", "nbval"} <= conda  # the test tools, as in pyproject's dev extra
    pip_part = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip_part
