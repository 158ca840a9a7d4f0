"""The layers of docs/architecture.md hold: the Qt-free packages import no Qt (nor VTK), so they run in a
command-line tool, a worker or a test without a screen.  Every module of those packages is imported in a fresh
interpreter and the interpreter's modules are listed."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import viewer

QT_FREE = ("viewer.dicom", "viewer.pacs", "viewer.library", "viewer.reading", "viewer.audit", "viewer.share")
ROOT = Path(viewer.__file__).resolve().parents[1]


def modules_of(package: str) -> list[str]:
    path = ROOT / package.replace(".", "/")
    return [package] + [f"{package}.{m.name}" for m in pkgutil.iter_modules([str(path)])]


def test_the_qt_free_packages_import_neither_qt_nor_vtk() -> None:
    names = [m for p in QT_FREE for m in modules_of(p)]
    assert len(names) > 60  # the walk found the packages' modules
    script = ("import importlib, json, sys\n"
              f"for name in {names!r}:\n"
              "    importlib.import_module(name)\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'shiboken6', 'vtk',"
              " 'vtkmodules'))))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
