import os
from pathlib import Path


def pytest_terminal_summary(terminalreporter):
    shots = Path(os.environ.get("GAN_BROWSER_SHOTS", Path(__file__).resolve().parents[2] / "images" / "runs" / "browser"))
    if shots.exists():
        terminalreporter.write_line(f"screenshots of each notebook in JupyterLab: {shots}")
