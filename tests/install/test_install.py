"""The install test (issue 6): build the .deb, install it into a clean Debian 12 root, use it, purge it.

Everything is real: ``packaging/deb/build_deb.py`` builds the package from this checkout; the root is unpacked
from a debootstrapped Debian 12 minbase (``packaging/deb/debroot.py``, cached in ``~/.cache/mifas-install``);
``apt-get install ./mifas-viewer.deb`` inside it resolves the ``Depends`` (python3, Qt's X libraries) from the
host's Debian mirror; ``mifas-pacs echo`` talks to a real Orthanc started on the host (a chroot shares the host's
network, so 127.0.0.1 is the same); the GUI renders the demo study on the X11 (xcb) platform to an Xvfb started on
the host whose socket folder is bind-mounted into the root (so the root holds nothing but minbase and what our
package pulls in: an Xvfb installed inside would bring X and OpenGL libraries along and hide a missing
dependency); the installed VTK renders a shaded sphere through that OpenGL; a newer package goes over IT's edited
conffile.  Then ``dpkg --purge`` and ``apt-get autoremove --purge`` must leave the root's file list as it was
before the install.

The tests of this module run in order on one root (module-scoped); the last one purges.  Needs root, debootstrap,
dpkg-deb, strip, python3-venv, Orthanc and Xvfb: skipped without them on a developer's machine, failed in CI.
Measurements go to ``build/install-test.json`` (``benchmarks/install.py`` prints them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mifaslab.orthanc import ORTHANC_BINARY, OrthancProcess
from tests.support import require

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "packaging/deb"))
import debroot  # noqa: E402  (packaging/deb is a folder of scripts, not a package)

pytestmark = [pytest.mark.install, pytest.mark.slow, pytest.mark.timeout(900)]

PREFIX = "/usr/lib/mifas-viewer"
# Not compared before/after: kernel and runtime file systems, dpkg/apt state, logs, caches, temporary files.
EXCLUDED = ("/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp", "/var/lib/dpkg", "/var/lib/apt", "/var/cache",
            "/var/log", "/etc/ld.so.cache")
OURS = (PREFIX, "/usr/bin/mifas-viewer", "/usr/bin/mifas-pacs", "/usr/share/applications/mifas-viewer.desktop",
        "/usr/share/icons/hicolor/scalable/apps/mifas-viewer.svg", "/usr/share/doc/mifas-viewer", "/etc/mifas-viewer")
XVFB = "/usr/bin/Xvfb"
MEASURED = ROOT / "build/install-test.json"
HOME = "/tmp/home"  # the runs' $HOME inside the root: user files stay in /tmp, out of the comparison


def _prerequisites() -> None:
    require(os.geteuid() == 0, "the install test needs root (debootstrap, chroot, mounts)")
    for tool, package in (("debootstrap", "debootstrap"), ("dpkg-deb", "dpkg"), ("strip", "binutils"),
                          ("chroot", "coreutils"), ("mount", "mount"), ("unshare", "util-linux"),
                          ("desktop-file-validate", "desktop-file-utils")):
        require(shutil.which(tool) is not None, f"{tool} is missing (apt-get install {package})")
    require(Path(XVFB).exists(), "Xvfb is missing (apt-get install xvfb)")
    require(ORTHANC_BINARY.exists(), "Orthanc is missing (apt-get install orthanc)")
    venv_check = subprocess.run(["/usr/bin/python3", "-c", "import ensurepip, venv"], capture_output=True)
    require(venv_check.returncode == 0, "python3-venv is missing (apt-get install python3-venv)")


class Installed:
    """The state shared by the module's tests: the package, the root, the X server, the measurements."""

    def __init__(self, deb: Path, build: dict, chroot: debroot.Chroot, display: str) -> None:
        self.deb, self.build, self.chroot, self.display = deb, build, chroot, display
        self.measured: dict[str, object] = {"package_bytes": build["bytes"], "package_mib": build["mib"],
                                            "installed_kib": build["installed_kib"], "compression": build["compression"],
                                            "build_s": build["build_s"]}
        self.before: set[str] = set()

    def run(self, *argv: str, env: dict[str, str] | None = None, timeout_s: float = 300) -> str:
        # The user's files (settings, library, Mesa's shader cache, which follows XDG_CACHE_HOME or else the
        # passwd entry's home, not $HOME) all go to HOME, under /tmp: they are the user's, not the package's.
        base = {"HOME": HOME, "XDG_CACHE_HOME": f"{HOME}/.cache", "XDG_CONFIG_HOME": f"{HOME}/.config",
                "XDG_DATA_HOME": f"{HOME}/.local/share", "TCP_NODELAY": "1"}
        return self.chroot.run(list(argv), " ".join(argv), env=dict(base, **(env or {})), timeout_s=timeout_s)

    def write(self, inside: str, text: str) -> None:
        path = self.chroot.root / inside.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def save(self) -> None:
        MEASURED.parent.mkdir(parents=True, exist_ok=True)
        MEASURED.write_text(json.dumps(self.measured, indent=1) + "\n")


def _start_xvfb(sockets: Path) -> tuple[subprocess.Popen, str]:
    """Xvfb on the host, in a private mount namespace where `sockets` is /tmp/.X11-unix, so that its socket lands
    in our folder (which the root bind-mounts) and not in the host's, which other X servers share.  -displayfd:
    Xvfb picks a free display number itself and tells us."""
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f'mount --bind "{sockets}" /tmp/.X11-unix && exec {XVFB} -displayfd {write_fd} -nolisten tcp -ac '
         '-screen 0 1280x1024x24'],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(write_fd,))
    os.close(write_fd)
    with os.fdopen(read_fd) as reader:
        number = reader.readline().strip()
    if not number.isdigit():
        xvfb.kill()
        pytest.fail(f"Xvfb did not start: {xvfb.communicate()[1].decode(errors='replace')[-1000:]}")
    assert (sockets / f"X{number}").exists(), "Xvfb's socket is not in the folder the root sees"
    return xvfb, f":{number}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory):
    _prerequisites()
    work = tmp_path_factory.mktemp("install")
    started = time.monotonic()
    built = subprocess.run(["/usr/bin/python3", str(ROOT / "packaging/deb/build_deb.py"), "--out", str(work / "dist"),
                            "--work", str(work / "stage")], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, f"the package build failed:\n{built.stdout[-3000:]}{built.stderr[-3000:]}"
    build = json.loads(built.stdout.strip().splitlines()[-1])
    deb = Path(build["deb"])
    tarball, base_build_s = debroot.base_tarball(say=lambda m: print(f"debroot: {m}", file=sys.stderr))
    sockets = work / "X11-unix"
    sockets.mkdir()
    sockets.chmod(0o1777)
    xvfb, display = _start_xvfb(sockets)
    state = None
    try:
        unpack_started = time.monotonic()
        with debroot.Chroot(tarball, say=lambda m: print(f"debroot: {m}", file=sys.stderr)) as chroot:
            state = Installed(deb, build, chroot, display)
            # A reference measured in the same run: unpacking the 200 MiB base (the machine's disk and CPU today).
            state.measured["unpack_base_s"] = round(time.monotonic() - unpack_started, 1)
            state.measured.update(base_build_s=round(base_build_s, 1), base_cached=base_build_s == 0.0)
            shutil.copyfile(deb, chroot.root / "tmp" / deb.name)
            t = time.monotonic()
            state.run("apt-get", "update", "-qq")
            state.measured["apt_update_s"] = round(time.monotonic() - t, 1)
            state.before = chroot.file_list(EXCLUDED)
            chroot.bind(sockets, "/tmp/.X11-unix")
            t = time.monotonic()
            out = state.run("apt-get", "install", "-y", "-q", "--no-install-recommends", f"/tmp/{deb.name}",
                            timeout_s=600)
            state.measured["install_s"] = round(time.monotonic() - t, 1)
            fetched = re.search(r"Need to get ([\d.,]+ [kMG]?B)", out)
            newly = re.search(r"(\d+) newly installed", out)
            state.measured.update(dependencies_download=fetched.group(1) if fetched else "0 B",
                                  packages_installed=int(newly.group(1)) if newly else None)
            yield state
    finally:
        xvfb.terminate()
        try:
            xvfb.wait(timeout=10)
        except subprocess.TimeoutExpired:
            xvfb.kill()
            xvfb.wait()
        if state is not None:
            state.measured["test_s"] = round(time.monotonic() - started, 1)
            state.save()


def test_files_are_in_place(installed: Installed) -> None:
    root = installed.chroot.root
    for command in ("mifas-viewer", "mifas-pacs"):
        link = root / "usr/bin" / command
        assert link.is_symlink() and os.readlink(link) == f"{PREFIX}/bin/{command}"
        assert (root / f"{PREFIX.lstrip('/')}/bin/{command}").read_text().startswith(f"#!{PREFIX}/bin/python\n")
    desktop = root / "usr/share/applications/mifas-viewer.desktop"
    assert "Exec=mifas-viewer" in desktop.read_text() and "Icon=mifas-viewer" in desktop.read_text()
    checked = subprocess.run(["desktop-file-validate", str(desktop)], capture_output=True, text=True)
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr
    for size in (48, 128, 256):  # PNG renderings of the SVG, for menus that do not scale SVG
        assert (root / f"usr/share/icons/hicolor/{size}x{size}/apps/mifas-viewer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (root / "usr/share/icons/hicolor/scalable/apps/mifas-viewer.svg").read_text().lstrip().startswith("<?xml")
    assert "/etc/mifas-viewer/settings.json" in installed.run("dpkg-query", "--control-show", "mifas-viewer", "conffiles")
    status = installed.run("dpkg-query", "-W", "-f=${Status} ${Version}", "mifas-viewer")
    assert status.startswith("install ok installed ")
    # Every library the viewer loads finds what it needs among the packages our Depends pulled in.  (Qt's
    # optional plugins - SQL drivers, Wayland, the GTK theme - need more and are never loaded here.)
    site = f"{PREFIX}/lib/python3.11/site-packages"
    loaded = " ".join([f"{site}/PySide6/Qt/plugins/platforms/libqxcb.so", f"{site}/PySide6/Qt/plugins/xcbglintegrations/*.so",
                       f"{site}/PySide6/Qt/plugins/imageformats/*.so",
                       *(f"{site}/PySide6/Qt/lib/libQt6{m}.so.6" for m in ("Core", "Gui", "Widgets", "DBus", "XcbQpa",
                                                                          "OpenGL", "OpenGLWidgets", "Svg")),
                       *(f"{site}/PySide6/Qt{m}.abi3.so" for m in ("Core", "Gui", "Widgets", "OpenGL",
                                                                  "OpenGLWidgets", "Svg")),
                       f"{site}/vtkmodules/*.so", f"{site}/*/*.cpython-311-x86_64-linux-gnu.so",
                       f"{site}/*.cpython-311-x86_64-linux-gnu.so"])
    missing = installed.run("sh", "-c", f"for f in {loaded}; do ldd $f | sed -n 's|^|'$f': |; /not found/p'; done")
    assert missing.strip() == "", f"libraries missing in the clean root (add them to Depends):\n{missing[:3000]}"


def test_version(installed: Installed) -> None:
    assert installed.run("mifas-viewer", "--version").strip() == f"mifas-viewer {installed.build['version']}"
    assert installed.run("mifas-pacs", "--version").strip() == f"mifas-pacs {installed.build['version']}"


def test_pacs_echo_with_node_cluster_and_system_defaults(installed: Installed, tmp_path: Path) -> None:
    with OrthancProcess(tmp_path / "orthanc", aet="INSTALLPACS") as orthanc:
        address = f"INSTALLPACS@127.0.0.1:{orthanc.dicom_port}"
        t = time.monotonic()
        out = installed.run("mifas-pacs", "echo", "--node", address)
        installed.measured["echo_s"] = round(time.monotonic() - t, 2)
        assert "answered in" in out and str(orthanc.dicom_port) in out, out
        # IT's system-wide defaults: a node in settings.json and a cluster profile beside it, inherited by a
        # user who has no settings of their own.
        installed.write("/etc/mifas-viewer/settings.json", json.dumps(
            {"version": 1, "calling_ae": "SITEWS",
             "nodes": [{"name": "site-pacs", "ae_title": "INSTALLPACS", "host": "127.0.0.1",
                        "port": orthanc.dicom_port}]}))
        installed.write("/etc/mifas-viewer/clusters.json", json.dumps(
            {"profiles": [{"name": "site-cluster", "ae_title": "INSTALLPACS",
                           "vip": {"host": "127.0.0.1", "port": orthanc.dicom_port}}]}))
        assert "answered in" in installed.run("mifas-pacs", "echo", "--node", "site-pacs")
        assert "cluster site-cluster: " in installed.run("mifas-pacs", "echo", "--cluster", "site-cluster")
        with pytest.raises(debroot.RootError, match="site-missing"):
            installed.run("mifas-pacs", "echo", "--node", "site-missing")
    with pytest.raises(debroot.RootError):  # Orthanc is gone: the echo must fail, so the passes above were real
        installed.run("mifas-pacs", "echo", "--node", "site-pacs", "--timeout", "2")


def test_gui_screenshot_of_the_demo_study(installed: Installed, tmp_path: Path) -> None:
    from PySide6.QtGui import QImage

    t = time.monotonic()
    installed.run("mifas-viewer", "--demo", "--library", "/tmp/library", "--screenshot", "/tmp/shot.png",
                  env={"DISPLAY": installed.display, "QT_QPA_PLATFORM": "xcb"}, timeout_s=180)
    installed.measured["screenshot_s"] = round(time.monotonic() - t, 1)
    shot = tmp_path / "shot.png"
    shutil.copyfile(installed.chroot.root / "tmp/shot.png", shot)
    (ROOT / "build").mkdir(exist_ok=True)
    shutil.copyfile(shot, ROOT / "build/install-screenshot.png")
    image = QImage(str(shot))
    assert not image.isNull() and image.width() >= 640 and image.height() >= 480
    image = image.convertToFormat(QImage.Format.Format_Grayscale8)
    width, height, stride = image.width(), image.height(), image.bytesPerLine()
    data = bytes(image.constBits())

    def stats(x0: float, x1: float, y0: float, y1: float) -> tuple[int, float, float]:
        pixels = [data[y * stride + x] for y in range(int(y0 * height), int(y1 * height), 2)
                  for x in range(int(x0 * width), int(x1 * width), 2)]
        mean = sum(pixels) / len(pixels)
        return len(set(pixels)), (sum((p - mean) ** 2 for p in pixels) / len(pixels)) ** 0.5, mean

    levels, spread, _ = stats(0, 1, 0, 1)
    # The middle of the window is the 2D viewport: the phantom's body (mid grey with noise) and its inserts.
    centre_levels, centre_spread, centre_mean = stats(0.4, 0.65, 0.35, 0.65)
    installed.measured.update(screenshot_levels=levels, screenshot_centre_levels=centre_levels,
                              screenshot_centre_spread=round(centre_spread, 1))
    assert levels >= 64, f"only {levels} grey levels in the whole window"
    assert centre_levels >= 16 and centre_spread > 10 and 20 < centre_mean < 235, \
        f"no image in the viewport: {centre_levels} levels, spread {centre_spread:.1f}, mean {centre_mean:.0f}"


VTK_RENDER = """
import numpy as np
from viewer.dicom.volume import Volume, VolumeGeometry
from viewer.ui.render3d import VolumeScene
k, j, i = np.indices((64, 64, 64))
r = np.sqrt((k - 32.0) ** 2 + (j - 32.0) ** 2 + (i - 32.0) ** 2)
data = np.where(r <= 20, 1000, np.where(r <= 26, 40, -850)).astype(np.int16)  # bone ball in soft tissue, in air
g = VolumeGeometry(shape=data.shape, origin=(0.0, 0.0, 0.0), row_direction=(1.0, 0.0, 0.0),
                   column_direction=(0.0, 1.0, 0.0), normal=(0.0, 0.0, 1.0), spacing=(1.0, 1.0, 1.0))
scene = VolumeScene(Volume(data, g, []), size=(200, 200))
frames = []
for preset in ("CT bone", "CT soft tissue"):
    scene.set_preset(preset)
    scene.render()
    frames.append(scene.frame().astype(int))
lit = int((frames[0].max(axis=2) > 30).sum())
differ = int((abs(frames[0] - frames[1]).max(axis=2) > 30).sum())
scene.close()
# the 3D widget of the reading window (QVTK in Qt, trackball interaction), shown on the test's X server
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication
from viewer.ui.volume_view import VolumeView
app = QApplication([])
view = VolumeView(Volume(data, g, []))
view.resize(320, 320)
view.show()
for _ in range(30):
    app.processEvents()
shot = QImage(str(view.save_snapshot("/tmp/mifas-3d-widget.png")))
widget_lit = sum(1 for y in range(0, shot.height(), 2) for x in range(0, shot.width(), 2)
                 if max(shot.pixelColor(x, y).getRgb()[:3]) > 30)
view.shutdown()
print(scene.mapper_kind, lit, differ, widget_lit)
"""


def test_3d_renders_with_the_installed_opengl(installed: Installed) -> None:
    """The viewer's own volume rendering (viewer.ui.render3d: VTK's volume mappers) draws through the OpenGL the
    package's Depends brought (Mesa, on the CPU here): a ball that is not blank and differs between presets; and the
    reading window's 3D widget (QVTK) shows and snapshots it.  This also proves the package's cut-down VTK holds
    what the viewer uses."""
    out = installed.run(f"{PREFIX}/bin/python", "-c", VTK_RENDER, env={"DISPLAY": installed.display})
    mapper, lit, differ, widget_lit = out.split()[-4:]
    lit, differ, widget_lit = int(lit), int(differ), int(widget_lit)
    installed.measured.update(vr_mapper=mapper, vr_lit_pixels=lit, vr_pixels_differing_between_presets=differ,
                              vr_widget_lit_samples=widget_lit)
    assert 0.05 * 200 * 200 < lit < 0.8 * 200 * 200, f"{lit} lit pixels ({mapper} mapper): no ball"
    assert differ > 0.01 * 200 * 200, f"only {differ} pixels differ between the bone and soft-tissue presets"
    assert widget_lit > 0.02 * (320 // 2) ** 2, f"the 3D widget's snapshot is blank ({widget_lit} lit samples)"


def test_upgrade_keeps_what_it_configured(installed: Installed, tmp_path: Path) -> None:
    """A newer package over the installed one (here the same files repacked as version <v>+upgrade): IT's edited
    conffile and the profiles beside it stay, the new version runs."""
    unpacked = tmp_path / "unpacked"
    subprocess.run(["dpkg-deb", "-R", str(installed.deb), str(unpacked)], check=True)
    control = unpacked / "DEBIAN/control"
    newer = f"{installed.build['version']}+upgrade"
    control.write_text(control.read_text().replace(f"Version: {installed.build['version']}\n", f"Version: {newer}\n"))
    deb = installed.chroot.root / "tmp/mifas-viewer-newer.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zzstd", "-z1", "--build", str(unpacked), str(deb)],
                   check=True, capture_output=True)
    t = time.monotonic()
    installed.run("dpkg", "-i", "/tmp/mifas-viewer-newer.deb")
    installed.measured["upgrade_s"] = round(time.monotonic() - t, 1)
    assert installed.run("dpkg-query", "-W", "-f=${Version}", "mifas-viewer") == newer
    settings = json.loads((installed.chroot.root / "etc/mifas-viewer/settings.json").read_text())
    assert [n["name"] for n in settings["nodes"]] == ["site-pacs"]  # IT's edit, not the shipped empty file
    assert (installed.chroot.root / "etc/mifas-viewer/clusters.json").exists()
    assert installed.run("mifas-viewer", "--version").strip() == f"mifas-viewer {installed.build['version']}"


def test_purge_leaves_nothing(installed: Installed) -> None:
    t = time.monotonic()
    installed.run("dpkg", "--purge", "mifas-viewer")
    installed.measured["purge_s"] = round(time.monotonic() - t, 1)
    installed.run("apt-get", "autoremove", "--purge", "-y", "-q")  # the dependencies our install pulled in
    installed.chroot.unmount("/tmp/.X11-unix")
    after = installed.chroot.file_list(EXCLUDED)
    root = installed.chroot.root
    left = [p for p in OURS if (root / p.lstrip("/")).exists() or (root / p.lstrip("/")).is_symlink()]
    assert left == [], f"left after purge: {left}"
    assert not [p for p in after if "mifas" in p.lower()], [p for p in after if "mifas" in p.lower()]
    added, removed = sorted(after - installed.before), sorted(installed.before - after)
    installed.measured.update(left_after_purge=len(added), missing_after_purge=len(removed))
    assert added == [] and removed == [], f"the root differs after purge: added {added[:30]}, removed {removed[:30]}"
    assert "mifas-viewer" not in installed.run("dpkg-query", "-W", "-f=${Package}\\n")
