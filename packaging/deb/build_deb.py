"""Build the Debian package of MIFAS Viewer: ``dist/mifas-viewer_<version>_amd64.deb``.

    python3 packaging/deb/build_deb.py [--out DIR] [--work DIR] [--compression zstd|gzip|xz|none] [--level N]

The recipe (the same one would serve a Windows or macOS installer, see docs/admin-guide.md):

1. a virtualenv made by Debian's own ``/usr/bin/python3`` (3.11 on Debian 12: the package ``Depends`` on it, so
   the interpreter is never bundled), in the staging tree at what will be its final path's place,
   ``<stage>/usr/lib/mifas-viewer`` (not /opt: Debian policy 9.1.1, and dpkg would remove an empty /opt that no
   package owns when ours is purged);
2. the dependencies installed into it exactly as ``requirements.lock`` pins them, every file checked against its
   hash (``pip install --require-hashes``; the lock is written by ``lock.py``), then the project **non-editable**
   from a copy of the source (``pip install --no-deps``; the build never touches the project's own ``.venv``), then
   pip and setuptools
   removed, every ``__pycache__`` and the test suites of the bundled libraries left out, VTK cut down to the
   modules the viewer uses and the libraries they need (:func:`prune_vtk`: a probe in the staged venv imports the
   viewer's VTK modules and renders a small volume), its libraries stripped of their symbol tables;
3. relocation: the console scripts' shebangs rewritten from the staging path to ``/usr/lib/mifas-viewer/bin/python``,
   ``pyvenv.cfg`` and the dist-info's ``direct_url.json`` freed of the build path;
4. ``/usr/bin/mifas-viewer`` and ``/usr/bin/mifas-pacs`` (symbolic links into the venv), the ``.desktop`` entry and
   the icon from ``resources/`` (SVG, plus PNGs rendered from it when PySide6 is at hand), the system-wide
   defaults ``/etc/mifas-viewer/settings.json`` (a conffile that sets nothing as shipped) and examples;
5. maintainer scripts: ``postinst`` byte-compiles the venv, ``prerm`` removes the byte code again (so that dpkg
   removes every folder), ``postrm purge`` removes ``/etc/mifas-viewer``;
6. ``dpkg-deb --root-owner-group`` with a fast compressor (zstd level 3 by default).

It prints one JSON line: the package path, its size, the installed size and the build seconds.  Needs
``python3-venv`` and ``dpkg-deb`` (Debian packages ``python3-venv``, ``dpkg``; ``zstd`` compression is built
into Debian 12's dpkg).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PACKAGE = "mifas-viewer"
LOCK = HERE / "requirements.lock"  # written by lock.py: every bundled package pinned, with its hashes
PREFIX = "/usr/lib/mifas-viewer"  # the venv's final path (Debian policy 9.1.1: a package never installs into /opt)
SYSTEM_PYTHON = "/usr/bin/python3"
COMMANDS = ("mifas-viewer", "mifas-pacs")
ICON_SIZES = (48, 128, 256)
# What the bundled wheels need from the system (Debian 12 names).  Python is the system's 3.11 (the venv uses it);
# the Qt xcb platform plugin needs the X libraries below (packaging/lib/deps.sh QT_RUNTIME_PACKAGES, the same list
# the source install uses); VTK (3D) needs OpenGL/EGL and X11; fonts for Qt's text.
DEPENDS = ("python3 (>= 3.11)", "python3 (<< 3.12)", "libgl1", "libegl1", "libglx-mesa0 | libglx-vendor",
           "libgl1-mesa-dri", "libglib2.0-0", "libfontconfig1", "fonts-dejavu-core | fonts-freefont-ttf", "libdbus-1-3",
           "libx11-6", "libx11-xcb1", "libxrender1", "libxext6", "libxt6", "libxkbcommon0", "libxkbcommon-x11-0",
           "libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1", "libxcb-shape0", "libxcb-xinerama0",
           "libxcb-randr0", "libxcb-render-util0", "libxcb-image0", "libxcb-xkb1")
# Left out of the venv: the installers' own tools, and test suites/data the application never imports.
REMOVE_FROM_SITE = ("pip", "setuptools", "pkg_resources", "_distutils_hack", "distutils-precedence.pth", "wheel")
TEST_DIRS = ("tests", "testing")
SOURCE_PATHS = ("pyproject.toml", "README.md", "LICENSE", "viewer")


def say(message: str) -> None:
    print(f"build_deb: {message}", file=sys.stderr, flush=True)


def run(argv: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            stdin=subprocess.DEVNULL, **kwargs)
    if result.returncode != 0:
        raise SystemExit(f"build_deb: {what} failed (status {result.returncode}):\n{result.stdout[-4000:]}")
    return result


def version() -> str:
    match = re.search(r'^__version__ = "([^"]+)"', (ROOT / "viewer/__init__.py").read_text(), re.M)
    if not match:
        raise SystemExit("build_deb: no __version__ in viewer/__init__.py")
    return match.group(1)


def copy_source(dest: Path) -> None:
    """The files pip builds from: tracked and new (not ignored) files only, so no build output leaks in.  Outside
    a git checkout (an unpacked source tarball): the source paths as they are, less byte code."""
    if (ROOT / ".git").exists():
        listed = run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z", "--", *SOURCE_PATHS],
                     "git ls-files").stdout.split("\0")
    else:
        listed = [str(p.relative_to(ROOT)) for name in SOURCE_PATHS for p in [ROOT / name, *(ROOT / name).rglob("*")]
                  if p.is_file() and "__pycache__" not in p.parts]
    for rel in filter(None, listed):
        source = ROOT / rel
        if source.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / rel)


def make_venv(stage: Path, source: Path) -> Path:
    venv = stage / PREFIX.lstrip("/")
    run([SYSTEM_PYTHON, "-m", "venv", str(venv)], "python3 -m venv (Debian: apt-get install python3-venv)")
    env = dict(os.environ, PIP_NO_COMPILE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--no-compile", "--no-warn-script-location"]
    # The dependencies exactly as locked, each file checked against its hash; then the viewer itself, alone.
    run([*pip, "--require-hashes", "--only-binary=:all:", "-r", str(LOCK)], "pip install (requirements.lock)", env=env)
    run([*pip, "--no-deps", str(source)], "pip install", env=env)
    return venv


# The modules through which the viewer uses VTK (viewer.ui.render3d is the one VTK module, volume_view its widget).
VTK_ENTRY_MODULES = ("viewer.ui.render3d", "viewer.ui.volume_view")
VTK_PROBE = r"""
import importlib, json, os, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
rendered = ""
try:  # render once, offscreen, so that libraries VTK loads only when it draws are seen too
    import numpy as np
    from viewer.dicom.volume import Volume, VolumeGeometry
    from viewer.ui.render3d import VolumeScene
    data = np.zeros((16, 16, 16), dtype=np.int16)
    data[4:12, 4:12, 4:12] = 1000
    g = VolumeGeometry((16, 16, 16), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 1.0))
    scene = VolumeScene(Volume(data, g, []), size=(64, 64))
    scene.render()
    scene.frame()
    rendered = scene.mapper_kind
    scene.close()
except Exception as exc:  # reported; the caller then keeps VTK whole
    rendered = ""
    print(f"render failed: {type(exc).__name__}: {exc}", file=sys.stderr)
modules = sorted(m.split(".")[1] for m in sys.modules if m.startswith("vtkmodules.vtk"))
mapped = sorted({os.path.basename(line.split()[-1]) for line in open("/proc/self/maps") if "/vtkmodules/" in line})
print(json.dumps({"modules": modules, "mapped": mapped, "rendered": rendered}))
"""


def _needed(path: Path) -> list[str]:
    out = run(["readelf", "-d", str(path)], "readelf (Debian: apt-get install binutils)").stdout
    return re.findall(r"\(NEEDED\).*\[(.+)\]", out)


def prune_vtk(venv: Path) -> dict[str, object]:
    """Keep only the part of VTK the viewer uses.  VTK's wheel is 560 MB of 376 libraries (accelerators, IO for
    dozens of formats, charts, web...).  What the viewer needs: the Python modules its VTK modules import (a probe
    imports them and renders a small volume offscreen in the staged venv, and reads which VTK libraries the process
    mapped), every vtkmodules.vtk* module named in its source, and all the libraries those need (readelf NEEDED,
    transitively).  The rest of VTK's libraries and type stubs go; its Python files stay (importing an unused one
    fails with ImportError, as for any missing module).  When the probe cannot render, VTK is kept whole."""
    site = next((venv / "lib").glob("python3*/site-packages"))
    vtk = site / "vtkmodules"
    if not vtk.is_dir():
        return {}
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", QT_QPA_PLATFORM="offscreen")
    env.pop("PYTHONPATH", None)
    result = subprocess.run([str(venv / "bin/python"), "-c", VTK_PROBE, *VTK_ENTRY_MODULES], capture_output=True,
                            text=True, env=env, stdin=subprocess.DEVNULL, timeout=300)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise SystemExit(f"build_deb: importing the viewer's VTK modules failed:\n{result.stderr[-3000:]}")
    probe = json.loads(lines[-1])
    if not probe["rendered"]:
        say(f"VTK kept whole: the probe could not render ({result.stderr.strip()[-300:]})")
        return {"vtk_pruned": False}
    source = "\n".join(p.read_text(errors="replace") for p in (site / "viewer").rglob("*.py"))
    modules = set(probe["modules"]) | set(re.findall(r"vtkmodules\.(vtk\w+)", source))
    files = {p.name: p for p in vtk.glob("*.so*") if p.is_file()}
    keep = {name for name in files if name.split(".")[0] in modules and ".cpython-" in name}
    keep |= {name for name in probe["mapped"] if name in files}
    todo = list(keep)
    while todo:
        for dependency in _needed(files[todo.pop()]):
            if dependency in files and dependency not in keep:
                keep.add(dependency)
                todo.append(dependency)
    before = sum(p.stat().st_size for p in files.values())
    removed = [p for name, p in files.items() if name not in keep]
    for path in removed:
        path.unlink()
    kept_modules = {name.split(".")[0] for name in keep if ".cpython-" in name}
    for stub in vtk.glob("*.pyi"):
        if stub.stem not in kept_modules:
            stub.unlink()
    after = sum(files[name].stat().st_size for name in keep)
    say(f"VTK: kept {len(keep)} of {len(files)} libraries ({after >> 20} of {before >> 20} MiB before stripping)")
    return {"vtk_pruned": True, "vtk_libraries_kept": len(keep), "vtk_libraries_removed": len(removed),
            "vtk_mapper_probed": probe["rendered"]}


def strip_venv(venv: Path) -> None:
    site = next((venv / "lib").glob("python3*/site-packages"))
    for entry in site.iterdir():
        base = entry.name.split("-")[0].lower() if entry.name.endswith(".dist-info") else entry.name
        if base in REMOVE_FROM_SITE or entry.name in REMOVE_FROM_SITE:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    for path in list(venv.rglob("*")):
        if path.is_dir() and not path.is_symlink() and (path.name == "__pycache__" or
                                                         (path.name in TEST_DIRS and path.parent != site)):
            shutil.rmtree(path, ignore_errors=True)
    for pattern in ("pip*", "activate*", "Activate.ps1", "wheel", "pyside6-*"):  # pyside6-*: Qt's developer tools
        for path in (venv / "bin").glob(pattern):
            path.unlink()
    shutil.rmtree(site / "pydicom/data/test_files", ignore_errors=True)  # 20 MB of samples; the viewer needs none
    # PySide6-Essentials ships Qt's PDF image-format plugin without libQt6Pdf (that is in PySide6-Addons): it can
    # never load, and the install test's library check would rightly call it broken.
    (site / "PySide6/Qt/plugins/imageformats/libqpdf.so").unlink(missing_ok=True)
    # VTK's wheel ships its libraries with their symbol tables (about a third of 560 MB); strip them as Debian's
    # dh_strip would.  Only VTK's: the auditwheel-repaired libraries of other wheels (numpy.libs, ...) were
    # rewritten by patchelf, which strip can break, and Qt's are stripped already.
    libraries = [str(p) for p in (site / "vtkmodules").glob("*.so*") if p.is_file() and not p.is_symlink()]
    if libraries:
        run(["strip", "--strip-unneeded", *libraries], "strip (Debian: apt-get install binutils)")


def relocate(venv: Path) -> None:
    """Point everything that names the staging folder at the final path."""
    staged = str(venv)
    for script in (venv / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        data = script.read_bytes()
        if data.startswith(b"#!") and staged.encode() in data.split(b"\n", 1)[0]:
            first, rest = data.split(b"\n", 1)
            script.write_bytes(f"#!{PREFIX}/bin/python\n".encode() + rest)
    cfg = venv / "pyvenv.cfg"
    cfg.write_text("".join(line for line in cfg.read_text().splitlines(keepends=True)
                           if not line.startswith("command")) )
    for direct_url in venv.rglob("direct_url.json"):
        direct_url.unlink()  # names the build folder; only pip's "installed from" note
    leftovers = [str(p) for p in venv.rglob("*") if p.is_file() and not p.is_symlink() and p.suffix in ("", ".py", ".cfg", ".txt")
                 and p.stat().st_size < 1 << 20 and staged.encode() in p.read_bytes()]
    if leftovers:
        raise SystemExit("build_deb: the staging path is still named in: " + ", ".join(leftovers[:10]))


def render_icons(stage: Path) -> list[int]:
    """PNG renderings of the SVG icon, when a PySide6 is at hand (the project's .venv, only read); else the SVG
    alone."""
    python = Path(os.environ.get("MIFAS_VENV", ROOT / ".venv")) / "bin/python"
    if not python.exists():
        return []
    code = (
        "import sys\n"
        "from PySide6.QtGui import QGuiApplication, QImage, QPainter\n"
        "from PySide6.QtSvg import QSvgRenderer\n"
        "app = QGuiApplication([])\n"
        "renderer = QSvgRenderer(sys.argv[1])\n"
        "assert renderer.isValid()\n"
        "for size, out in zip(sys.argv[2::2], sys.argv[3::2]):\n"
        "    image = QImage(int(size), int(size), QImage.Format.Format_ARGB32)\n"
        "    image.fill(0)\n"
        "    painter = QPainter(image)\n"
        "    renderer.render(painter)\n"
        "    painter.end()\n"
        "    assert image.save(out, 'PNG')\n"
    )
    args = []
    for size in ICON_SIZES:
        out = stage / f"usr/share/icons/hicolor/{size}x{size}/apps/{PACKAGE}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        args += [str(size), str(out)]
    result = subprocess.run([str(python), "-c", code, str(ROOT / "resources/mifas-viewer.svg"), *args],
                            env=dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONDONTWRITEBYTECODE="1"),
                            capture_output=True, text=True)
    if result.returncode != 0:
        say(f"PNG icons not rendered ({result.stderr.strip()[-300:]}); shipping the SVG only")
        shutil.rmtree(stage / "usr/share/icons/hicolor", ignore_errors=True)
        return []
    return list(ICON_SIZES)


POSTINST = f"""#!/bin/sh
set -e
# Byte-compile the bundled Python once, as root, so that users' start-ups are fast (prerm removes it again).
if [ "$1" = configure ]; then
    {PREFIX}/bin/python -m compileall -q -j0 {PREFIX}/lib >/dev/null 2>&1 || true
fi
exit 0
"""
PRERM = f"""#!/bin/sh
set -e
# Byte code is not in the package's file list: remove it, or dpkg would leave the folders behind.
find {PREFIX} -depth -type d -name __pycache__ -exec rm -rf {{}} + 2>/dev/null || true
exit 0
"""
POSTRM = """#!/bin/sh
set -e
if [ "$1" = purge ]; then
    # Purge removes the system-wide configuration, including cluster profiles IT added to the folder.
    rm -rf /etc/mifas-viewer
fi
exit 0
"""


def stage_files(stage: Path) -> list[int]:
    for command in COMMANDS:
        link = stage / "usr/bin" / command
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"{PREFIX}/bin/{command}")
    install = [(ROOT / "resources/mifas-viewer.desktop", f"usr/share/applications/{PACKAGE}.desktop"),
               (ROOT / "resources/mifas-viewer.svg", f"usr/share/icons/hicolor/scalable/apps/{PACKAGE}.svg"),
               (HERE / "etc/settings.json", "etc/mifas-viewer/settings.json"),
               (HERE / "examples/settings.json", f"usr/share/doc/{PACKAGE}/examples/settings.json"),
               (HERE / "examples/clusters.json", f"usr/share/doc/{PACKAGE}/examples/clusters.json")]
    for source, rel in install:
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, stage / rel)
    copyright_text = (f"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
                      f"Upstream-Name: {PACKAGE}\n\nFiles: *\nLicense: MIT\n"
                      f" The bundled Python packages in {PREFIX} keep their own licences (see their dist-info).\n"
                      f" PyAV's wheel bundles FFmpeg with libx264 and libx265 (GPL-2+), used to write MP4 cine loops.\n")
    (stage / f"usr/share/doc/{PACKAGE}/copyright").write_text(copyright_text)
    return render_icons(stage)


def control(stage: Path, ver: str) -> None:
    debian = stage / "DEBIAN"
    debian.mkdir()
    installed_kib = int(run(["du", "-sk", "--exclude=DEBIAN", str(stage)], "du").stdout.split()[0])
    arch = run(["dpkg", "--print-architecture"], "dpkg --print-architecture").stdout.strip()
    (debian / "control").write_text(
        f"Package: {PACKAGE}\nVersion: {ver}\nArchitecture: {arch}\nMaintainer: MIFAS Viewer developers <mifas@example.org>\n"
        f"Installed-Size: {installed_kib}\nDepends: {', '.join(DEPENDS)}\nSection: science\nPriority: optional\n"
        "Description: desktop DICOM viewer whose PACS connection survives server failover\n"
        " MIFAS Viewer finds studies on a PACS (DIMSE and DICOMweb) or on disk and reads them in 2D and 3D.\n"
        f" Its Python environment is bundled in {PREFIX}; it runs on the system's Python 3.11.\n")
    (debian / "conffiles").write_text("/etc/mifas-viewer/settings.json\n")
    for name, text in (("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)):
        (debian / name).write_text(text)
        (debian / name).chmod(0o755)


def build(out_dir: Path, work: Path, compression: str, level: int) -> dict[str, object]:
    started = time.monotonic()
    ver = version()
    if work.exists():
        shutil.rmtree(work)
    source, stage = work / "src", work / "stage"
    source.mkdir(parents=True)
    copy_source(source)
    say(f"installing {PACKAGE} {ver} and its dependencies into a venv for {PREFIX}")
    venv = make_venv(stage, source)
    pruned = prune_vtk(venv)
    strip_venv(venv)
    relocate(venv)
    icons = stage_files(stage)
    control(stage, ver)
    run(["chmod", "-R", "u+rwX,go+rX,go-w", str(stage)], "chmod")
    out_dir.mkdir(parents=True, exist_ok=True)
    deb = out_dir / f"{PACKAGE}_{ver}_{run(['dpkg', '--print-architecture'], 'dpkg').stdout.strip()}.deb"
    say(f"packing {deb.name} ({compression} -{level})")
    packed_at = time.monotonic()
    run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", f"-z{level}", "--build", str(stage), str(deb)],
        "dpkg-deb --build")
    pack_s = time.monotonic() - packed_at
    installed_kib = int(re.search(r"^Installed-Size: (\d+)", (stage / "DEBIAN/control").read_text(), re.M).group(1))
    shutil.rmtree(work)
    return {"deb": str(deb), "version": ver, "bytes": deb.stat().st_size,
            "mib": round(deb.stat().st_size / 2**20, 1), "installed_kib": installed_kib,
            "compression": f"{compression}-{level}", "icons_png": icons, **pruned,
            "pack_s": round(pack_s, 1), "build_s": round(time.monotonic() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the MIFAS Viewer .deb")
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where the .deb goes (default: dist/)")
    parser.add_argument("--work", type=Path, default=ROOT / "build/deb", help="staging folder (default: build/deb)")
    parser.add_argument("--compression", default="zstd", choices=("zstd", "gzip", "xz", "none"))
    parser.add_argument("--level", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(build(args.out, args.work, args.compression, args.level)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
