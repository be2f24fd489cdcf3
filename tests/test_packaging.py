"""The two ways to install the course ask for the same packages."""

import re
from pathlib import Path

import yaml

try:
    import tomllib  # Python 3.11+
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI (the dev extra)
    import tomli as tomllib

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


def _numbers(version: str) -> tuple[int, ...]:
    parts = tuple(int(p) for p in version.split("."))
    return parts + (0,) * (4 - len(parts))


def _floors(requirements: list[str]) -> dict[str, str | None]:
    """name -> the version after '>=' (None where there is none)."""
    found = {}
    for requirement in requirements:
        floor = re.search(r">=\s*([\d.]+)", requirement)
        found[_name(requirement)] = floor.group(1) if floor else None
    return found


def test_min_versions_file_pins_the_lower_bound_of_every_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floors = _floors(project["dependencies"] + project["optional-dependencies"]["dev"])
    pins = {}
    for line in (ROOT / "tests" / "min-versions.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    assert pins.keys() == floors.keys(), "min-versions.txt and pyproject.toml list other packages"
    for name, floor in floors.items():
        assert floor is not None, f"{name} has no lower bound in pyproject.toml"
        # 2.4.1 is a release of the 2.4 that '>=2.4' allows; 2.5.0 would test less than it claims.
        release = ".".join(pins[name].split(".")[: len(floor.split("."))])
        assert release == floor, f"{name}: min-versions.txt has {pins[name]}, pyproject.toml >={floor}"
    # environment.yml asks for no less than pyproject.toml where it names a floor.
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = _floors([d for d in env["dependencies"] if isinstance(d, str)])
    for name, floor in floors.items():
        conda_floor = conda.get(CONDA_NAMES.get(name, name))
        if conda_floor is not None:
            assert _numbers(conda_floor) == _numbers(floor), f"{name}: environment.yml >={conda_floor}"


def test_every_subpackage_is_installed():
    # A plain `pip install .` (a wheel) ships only the packages pyproject.toml lists.
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "gan_helpers").rglob("__init__.py")}
    data = {"gan_helpers.mnist", "gan_helpers.weights"}  # folders of data, no code
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - found - data == set()
