"""The course as a student meets it: every notebook run in a real JupyterLab, in headless
Chromium, in fast mode.

    make test-browser            # or: GAN_COURSE_FAST=1 pytest -v tests/browser

For each notebook: Run > Run All Cells, wait until every cell has run and the kernel is
idle, then check that no cell left an error (read from the saved notebook, so the
message names the cell), that every widget rendered (no "Error displaying widget",
nothing stuck at "Loading widget..."), and, where a training dashboard runs, that its
sample grid changed at least twice while training and that a static picture is left
when it ends. A screenshot of each notebook goes to the folder printed at the end
(``$GAN_BROWSER_SHOTS``, default ``images/runs/browser``).

The notebooks are copied to a temporary folder first: JupyterLab saves what it runs, and
the committed notebooks keep the outputs of a full run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

selenium = pytest.importorskip("selenium", reason="pip install -e '.[browser]'")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted(
    (ROOT / "notebooks" / "assignments").glob("*.ipynb")
)
CELL_LIMIT_S = float(os.environ.get("GAN_BROWSER_NOTEBOOK_TIMEOUT", 600))
SHOTS = Path(os.environ.get("GAN_BROWSER_SHOTS", ROOT / "images" / "runs" / "browser"))

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip("needs Chromium and ChromeDriver (apt-get install chromium chromium-driver)",
                allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 over a copy of the course; stopped at the end,
    also when a check fails."""
    work = tmp_path_factory.mktemp("course")
    shutil.copytree(ROOT / "notebooks", work / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    (work / "images").mkdir()
    # JupyterLab's own setting turns its "news" prompt off, which else covers a corner
    # of every screenshot.
    settings = work / ".lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    port, token = _free_port(), "gan-course-browser-check"
    env = {**os.environ, "GAN_COURSE_FAST": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={work}", "--ServerApp.port_retries=0",
         "--LabApp.news_url=", "--KernelManager.transport_encryption=auto",  # as `make lab`
         f"--LabApp.user_settings_dir={work / '.lab-settings'}",
         ] + (["--allow-root"] if os.geteuid() == 0 else []),
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    out = server.stdout.read().decode(errors="replace") if server.stdout else ""
                    pytest.fail(f"JupyterLab did not start:\n{out[-2000:]}")
                time.sleep(0.5)
        yield {"base": base, "token": token, "root": work}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                 "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


# JavaScript run in the page: the state of the open notebook.
_STATE_JS = """
const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
if (!panel) return null;
const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(p => p.textContent.trim());
const status = document.querySelector('.jp-Notebook-ExecutionIndicator');
const kernel = panel.querySelector('.jp-KernelName, .jp-Toolbar-kernelName');
const bar = document.querySelector('.jp-StatusBar-Widget, #jp-main-statusbar');
const dash = [...panel.querySelectorAll('.widget-image')].map(img => img.src);
return {
  prompts: prompts,
  busy: status ? status.getAttribute('data-status') : null,
  kernel: kernel ? kernel.textContent.trim() : null,
  statusBar: bar ? bar.innerText : '',
  text: panel.innerText,
  widgetProblems: [...panel.querySelectorAll('.jp-CodeCell')].flatMap((cell, i) => {
    const out = cell.querySelector('.jp-OutputArea');
    const text = out ? out.innerText : '';
    return ['Error displaying widget', 'Loading widget...']
      .filter(bad => text.includes(bad)).map(bad => [i + 1, bad]);
  }),
  dashboardImages: dash,
};
"""


def _click_menu(driver, menu: str, command: str) -> None:
    for item in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item"):
        if item.text.strip() == menu:
            item.click()
            break
    else:
        raise AssertionError(f"no '{menu}' menu in JupyterLab")
    entry = driver.find_element(By.CSS_SELECTOR, f'.lm-Menu-item[data-command="{command}"]')
    entry.click()


def _wait(predicate, timeout: float, what: str, poll: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _screenshot_dashboard(driver, relative: str) -> Path:
    """Scroll the live dashboard into view and save a screenshot of it mid-training."""
    driver.execute_script(
        "const img = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .widget-image');"
        "const cell = img && img.closest('.jp-Cell');"
        "if (cell) cell.scrollIntoView({block: 'start'});"
    )
    time.sleep(0.5)
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{Path(relative).stem}-dashboard.png"
    driver.save_screenshot(str(path))
    return path


def run_notebook_in_lab(driver, lab, relative: str) -> dict:
    """Open ``relative`` (a path under the server root), run all cells, wait until done.
    Returns what was seen: the distinct dashboard images while running and the final
    page state."""
    driver.get(f"{lab['base']}/lab/tree/{relative}?token={lab['token']}&reset")
    def kernel_ready():
        state = driver.execute_script(_STATE_JS) or {}
        return (state.get("kernel") not in (None, "", "No Kernel")
                and "Idle" in state.get("statusBar", "") and len(state.get("prompts", [])) > 0)

    _wait(kernel_ready, 120, f"{relative} to open with an idle kernel")
    time.sleep(0.5)
    # Clear the saved outputs first, so every numbered prompt afterwards is from this run.
    _click_menu(driver, "Edit", "editmenu:clear-all")
    _wait(lambda: all(p in ("[ ]:", "") for p in driver.execute_script(_STATE_JS)["prompts"]), 30,
          f"the outputs of {relative} to clear")
    _click_menu(driver, "Run", "runmenu:run-all")
    seen_images: list[str] = []
    started, quiet_since, shot = False, None, None
    deadline = time.monotonic() + CELL_LIMIT_S
    while time.monotonic() < deadline:
        state = driver.execute_script(_STATE_JS)
        for src in state["dashboardImages"]:
            if src and src not in seen_images:
                seen_images.append(src)
        if len(seen_images) >= 8 and shot is None:
            shot = _screenshot_dashboard(driver, relative)
        prompts = state["prompts"]
        started = started or any(p[1:-2].strip().isdigit() for p in prompts if p.startswith("["))
        # Done when nothing is queued or running and the kernel has stayed idle a moment
        # (Run All stops at a cell that raises, leaving the later prompts empty).
        idle = started and state["busy"] == "idle" and not any("*" in p for p in prompts)
        if not idle:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 2.0:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"{relative}: cells still running after {CELL_LIMIT_S:.0f} s")
    time.sleep(1.0)  # let the last widget messages render
    _click_menu(driver, "File", "docmanager:save")
    time.sleep(1.0)
    return {"dashboard_images": seen_images, "state": driver.execute_script(_STATE_JS)}


def problems_in(saved: Path, state: dict, dashboard_images: list[str], name: str) -> list[str]:
    """Everything wrong with one run, each naming the notebook and the cell."""
    nb = json.loads(saved.read_text())
    found = []
    code_index = 0
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        code_index += 1
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append(f"{name}, code cell {code_index}: {out['ename']}: {out['evalue']}")
        source = "".join(cell["source"])
        if "LiveDashboard(" in source:
            has_picture = any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))
            if not has_picture:
                found.append(f"{name}, code cell {code_index}: no static dashboard picture after training")
    for cell, bad in state.get("widgetProblems", []):
        found.append(f"{name}, code cell {cell}: the page shows '{bad}'")
    trains = any("LiveDashboard(" in "".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    if trains and len(dashboard_images) < 3:
        found.append(
            f"{name}: the dashboard grid changed {max(0, len(dashboard_images) - 1)} times "
            "while training (expected at least 2)"
        )
    return found


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_in_jupyterlab(lab, browser, notebook):
    relative = notebook.relative_to(ROOT).as_posix()
    seen = run_notebook_in_lab(browser, lab, relative)
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / f"{notebook.stem}.png"))
    print(f"screenshots in {SHOTS}")
    problems = problems_in(lab["root"] / relative, seen["state"], seen["dashboard_images"], notebook.name)
    assert not problems, "\n".join(problems)


def _write_notebook(path: Path, sources: list[str]) -> None:
    path.write_text(json.dumps({
        "cells": [{"cell_type": "code", "metadata": {}, "source": src, "outputs": [],
                   "execution_count": None} for src in sources],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }))


def test_an_exception_is_named_with_its_notebook_and_cell(lab, browser):
    """The check itself: a cell that raises fails the notebook, naming it and the cell."""
    bad = lab["root"] / "notebooks" / "zz_raises.ipynb"
    _write_notebook(bad, ["x = 1", "1 / 0", "y = 2"])
    seen = run_notebook_in_lab(browser, lab, "notebooks/zz_raises.ipynb")
    problems = problems_in(bad, seen["state"], seen["dashboard_images"], bad.name)
    assert problems == ["zz_raises.ipynb, code cell 2: ZeroDivisionError: division by zero"], problems


def test_a_broken_widget_is_caught(lab, browser):
    """The check itself: a widget view whose model does not exist fails the notebook."""
    bad = lab["root"] / "notebooks" / "zz_broken_widget.ipynb"
    _write_notebook(bad, [
        "from IPython.display import display\n"
        "display({'application/vnd.jupyter.widget-view+json': "
        "{'model_id': 'no-such-model', 'version_major': 2, 'version_minor': 0}}, raw=True)",
    ])
    seen = run_notebook_in_lab(browser, lab, "notebooks/zz_broken_widget.ipynb")
    problems = problems_in(bad, seen["state"], seen["dashboard_images"], bad.name)
    assert problems == ["zz_broken_widget.ipynb, code cell 1: the page shows 'Error displaying widget'"], problems
