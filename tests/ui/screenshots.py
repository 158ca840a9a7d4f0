"""The user guide's pictures, taken by the tests that drive what they show (docs/user-guide.md).

Each such test saves its pictures into :func:`screenshot_dir`: ``$MIFAS_SCREENSHOTS`` when set (``docs/images`` to
refresh the guide: ``MIFAS_SCREENSHOTS=docs/images .venv/bin/python -m pytest tests/ui -k "screenshot or
guide"``), else a temporary folder, so every run checks that the pictures can be made."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtGui import QPixmap

SCREENSHOT_BYTES_MAX = 100_000  # a picture committed to docs/images stays small


def screenshot_dir(tmp_path: Path) -> Path:
    out = Path(os.environ.get("MIFAS_SCREENSHOTS") or tmp_path / "shots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def save_screenshots(shots: dict[str, QPixmap], out: Path) -> None:
    """Save each picture as a PNG and check it is a real, small one."""
    for name, pixmap in shots.items():
        assert not pixmap.isNull(), name
        path = out / name
        assert pixmap.save(str(path), "PNG"), name
        assert 0 < path.stat().st_size < SCREENSHOT_BYTES_MAX, name
