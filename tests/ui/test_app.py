"""The mifas-viewer command: --version, --screenshot of the demo, and failures reported in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtGui import QImage

import viewer

pytestmark = pytest.mark.gui


def command() -> list[str]:
    script = Path(sys.executable).with_name("mifas-viewer")
    return [str(script)] if script.exists() else [sys.executable, "-m", "viewer.ui.app"]


def run(args: list[str], timeout_s: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if not env.get("DISPLAY"):
        env["QT_QPA_PLATFORM"] = "offscreen"
    return subprocess.run(command() + args, capture_output=True, text=True, timeout=timeout_s, env=env)


def test_version_prints_and_never_starts_qt():
    result = run(["--version"])
    assert result.returncode == 0
    assert result.stdout.strip() == f"mifas-viewer {viewer.__version__}"
    code = ("import sys; from viewer.ui.app import main; rc = main(['--version']); "
            "print(rc, any(m.startswith('PySide6') for m in sys.modules))")
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip().splitlines()[-1] == "0 False"


def test_demo_screenshot_is_a_real_image(tmp_path):
    out = tmp_path / "out.png"
    result = run(["--demo", "--library", str(tmp_path / "lib"), "--screenshot", str(out)])
    assert result.returncode == 0, result.stderr
    image = QImage(str(out))
    assert not image.isNull() and image.width() > 600 and image.height() > 400
    # The viewport fills the right part of the window: sample its middle.
    w, h = image.width(), image.height()
    greys = set()
    for x in range(int(w * 0.45), int(w * 0.95), 3):
        for y in range(int(h * 0.25), int(h * 0.75), 3):
            c = image.pixelColor(x, y)
            assert c.red() == c.green() == c.blue() or abs(c.red() - c.green()) <= 8  # grey (16-bit X: rounding)
            greys.add(c.green())
    assert len(greys) >= 8, sorted(greys)
    assert min(greys) < 40 and max(greys) > 200  # air and bone of the phantom
    assert (tmp_path / "lib" / "index.sqlite").exists()


def test_open_a_folder_and_screenshot(tmp_path, ct_series):
    out = tmp_path / "open.png"
    result = run(["--open", str(ct_series.files[0].parent), "--library", str(tmp_path / "lib2"), "--screenshot", str(out)])
    assert result.returncode == 0, result.stderr
    assert not QImage(str(out)).isNull()


def test_screenshot_failure_is_one_line_and_nonzero(tmp_path):
    junk = tmp_path / "junk.txt"
    junk.write_text("not DICOM")
    result = run(["--open", str(junk), "--library", str(tmp_path / "lib"), "--screenshot", str(tmp_path / "x.png"),
                  "--screenshot-timeout", "30"])
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("mifas-viewer:")]
    assert lines == ["mifas-viewer: screenshot failed: Nothing that could be shown was imported. "
                     "0 image(s) added, 0 already in the library, 1 file(s) could not be imported."]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_missing_open_path_is_a_usage_error(tmp_path):
    result = run(["--open", str(tmp_path / "nope"), "--library", str(tmp_path / "lib")])
    assert result.returncode == 2
    assert "does not exist" in result.stderr
