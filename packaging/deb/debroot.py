"""A clean Debian 12 root for the install test: debootstrapped once from the host's apt mirror, cached as a tarball.

``base_tarball()`` returns ``~/.cache/mifas-install/base-<recipe>.tar`` (``$MIFAS_INSTALL_CACHE`` overrides the
folder), building it when missing: ``debootstrap --variant=minbase`` of bookworm from the mirror this host's apt
uses (as ``packaging/lab/mifaslab/image.py`` does), the same suites as the host (bookworm, -updates, -security)
in its sources, and ``apt-get update`` done once so that the lists are in the tarball.  ``<recipe>`` hashes
everything that decides the content (suite, mirrors, variant, the code of the build), so a change builds a new base.  A build
works in ``base-<recipe>.partial`` and renames the tarball into place only when complete.

``Chroot`` unpacks the base into a fresh folder and mounts ``/proc``, ``/sys``, ``/dev`` and ``/dev/pts`` (plus
any bind mounts asked for) while in use; leaving it unmounts everything and deletes the folder.  Nothing here is
installed into the base beyond minbase: what a package needs must come from its ``Depends`` through apt.

    python3 packaging/deb/debroot.py        # build (or find) the cached base and print its path
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))
from mifaslab.host import host_mirrors  # noqa: E402  (the lab reads the host's apt sources the same way)
from mifaslab.host import remove_tree as _remove_tree  # noqa: E402

SUITE = "bookworm"
VARIANT = "minbase"
STEP_TIMEOUT_S = 900.0
TAIL_CHARS = 3000
CHROOT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8",
              "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}

Say = Callable[[str], None]


class RootError(RuntimeError):
    """Building or using the test root failed (the message says which step and ends with its output)."""


def cache_dir() -> Path:
    if os.environ.get("MIFAS_INSTALL_CACHE"):
        return Path(os.environ["MIFAS_INSTALL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mifas-install"


def recipe() -> dict[str, object]:
    mirror, security = host_mirrors()
    return {"suite": SUITE, "variant": VARIANT, "mirror": mirror, "security": security,
            "builder": hashlib.sha256((inspect.getsource(base_tarball) + inspect.getsource(sources_list)).encode()).hexdigest()}


def recipe_id() -> str:
    return hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:12]


def sources_list(mirror: str, security: str) -> str:
    lines = [f"deb {mirror} {SUITE} main", f"deb {mirror} {SUITE}-updates main"]
    if security:
        lines.append(f"deb {security} {SUITE}-security main")
    return "\n".join(lines) + "\n"


def run(argv: Sequence[str], what: str, *, timeout_s: float = STEP_TIMEOUT_S, env: dict[str, str] | None = None,
        log: Path | None = None) -> str:
    """Run a command; its combined output is returned (and appended to `log`); failure raises RootError."""
    try:
        result = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                timeout=timeout_s, env=env, text=True, errors="replace")
    except subprocess.TimeoutExpired as exc:
        raise RootError(f"{what} did not finish within {timeout_s:g} s") from exc
    except FileNotFoundError as exc:
        raise RootError(f"{what}: {argv[0]} is not installed") from exc
    if log is not None:
        with open(log, "a") as out:
            out.write(f"\n$ {' '.join(argv)}\n{result.stdout}")
    if result.returncode != 0:
        raise RootError(f"{what} failed (status {result.returncode}):\n{result.stdout[-TAIL_CHARS:]}")
    return result.stdout


def base_tarball(*, say: Say = print, cache: Path | None = None) -> tuple[Path, float]:
    """The cached base tarball for the current recipe, built when missing; returns it and the build seconds."""
    cache = cache or cache_dir()
    ident = recipe_id()
    final = cache / f"base-{ident}.tar"
    if final.is_file():
        return final, 0.0
    if os.geteuid() != 0:
        raise RootError("building the Debian 12 root needs root (debootstrap)")
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob("base-*.partial"):  # an interrupted build may have stopped anywhere
        say(f"removing a half-built base left by an interrupted build: {stale.name}")
        remove_tree(stale)
    work = cache / f"base-{ident}.partial"
    work.mkdir()
    started = time.monotonic()
    try:
        root, log = work / "root", work / "build.log"
        mirror, security = host_mirrors()
        say(f"debootstrap {VARIANT} {SUITE} from {mirror} (once; cached in {cache})")
        run(["debootstrap", f"--variant={VARIANT}", "--components=main", SUITE, str(root), mirror],
            "debootstrap", log=log)
        (root / "etc/apt/sources.list").write_text(sources_list(mirror, security))
        shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
        run(["chroot", str(root), "apt-get", "update", "-qq"], "apt-get update in the base", env=CHROOT_ENV, log=log)
        run(["chroot", str(root), "apt-get", "clean"], "apt-get clean", env=CHROOT_ENV, log=log)
        (root / "etc/resolv.conf").write_text("")
        partial_tar = work / "base.tar"
        run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(partial_tar), "."], "tar", log=log)
        partial_tar.rename(final)
    finally:
        remove_tree(work)
    for old in cache.glob("base-*.tar"):
        if old != final:
            say(f"removing the base of an older recipe: {old.name}")
            old.unlink()
    seconds = time.monotonic() - started
    say(f"built {final.name} in {seconds:.0f} s")
    return final, seconds


def remove_tree(path: Path) -> None:
    """Unmount what is left inside `path`, then delete it (the lab's helper; RootError when a mount stays)."""
    _remove_tree(path, error=RootError)


ROOTS_DIR = Path("/var/tmp/mifas-install-roots")


def _remove_stale_roots(parent: Path, say: Say) -> None:
    """Roots left by a test that was killed (its mounts still there): unmount and delete them.  Never leave them
    for a generic cleanup (pytest's old temporary folders, tmpreaper): deleting a tree that still has the host's
    /dev bind-mounted inside would delete the host's device nodes."""
    for folder in parent.glob("mifas-root-*"):
        pid = folder.name.split("-")[2]
        if pid.isdigit() and Path(f"/proc/{pid}").exists():
            continue  # another live run's
        say(f"removing a root left by an interrupted run: {folder}")
        remove_tree(folder)


class Chroot:
    """A fresh Debian 12 root unpacked from the cached base, with /proc, /sys, /dev mounted while in use.

    It lives in its own folder (``ROOTS_DIR`` unless `parent` is given), never inside a temporary folder that some
    other cleanup might delete while the mounts are still in place (see _remove_stale_roots)."""

    def __init__(self, tarball: Path, *, parent: Path | None = None, binds: Sequence[tuple[Path, str]] = (),
                 say: Say = print) -> None:
        self.tarball = tarball
        self.parent = parent or ROOTS_DIR
        self.say = say
        self.binds = list(binds)  # (host path, path inside the root)
        self.folder: Path | None = None
        self._mounted: list[Path] = []

    @property
    def root(self) -> Path:
        assert self.folder is not None, "the chroot is not set up"
        return self.folder / "root"

    def __enter__(self) -> Chroot:
        self.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_roots(self.parent, self.say)
        self.folder = Path(tempfile.mkdtemp(prefix=f"mifas-root-{os.getpid()}-", dir=self.parent))
        try:
            self.root.mkdir()
            run(["tar", "--numeric-owner", "--xattrs", "-C", str(self.root), "-xf", str(self.tarball)], "unpacking the base")
            shutil.copyfile("/etc/resolv.conf", self.root / "etc/resolv.conf")
            for kind, source, target in (("proc", "proc", "proc"), ("sysfs", "sysfs", "sys")):
                self._mount(["-t", kind, source], target)
            for sub in ("dev", "dev/pts"):
                self._mount(["--bind", f"/{sub}"], sub)
            for host_path, inside in self.binds:
                self.bind(host_path, inside)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _mount(self, args: list[str], target: str) -> None:
        path = self.root / target
        run(["mount", *args, str(path)], f"mount {target}")
        self._mounted.append(path)

    def bind(self, host_path: Path, inside: str) -> None:
        """Bind-mount a host folder into the root (until unmount() or the end)."""
        (self.root / inside.lstrip("/")).mkdir(parents=True, exist_ok=True)
        self._mount(["--bind", str(host_path)], inside.lstrip("/"))

    def unmount(self, inside: str) -> None:
        """Unmount one of the bind mounts (so that a file list of the root does not see into it)."""
        path = self.root / inside.lstrip("/")
        if path in self._mounted:
            subprocess.run(["umount", str(path)], capture_output=True)
            self._mounted.remove(path)

    def __exit__(self, *exc: object) -> None:
        for path in reversed(self._mounted):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
        self._mounted.clear()
        if self.folder is not None:
            remove_tree(self.folder)
            self.folder = None

    def run(self, argv: Sequence[str], what: str, *, timeout_s: float = STEP_TIMEOUT_S,
            env: dict[str, str] | None = None) -> str:
        """Run a command inside the root (as root, with a clean environment plus `env`)."""
        full_env = dict(CHROOT_ENV, **(env or {}))
        return run(["chroot", str(self.root), *argv], what, timeout_s=timeout_s, env=full_env)

    def file_list(self, excluded: Sequence[str]) -> set[str]:
        """Every path in the root (files, folders, links) except those under the `excluded` prefixes."""
        root = str(self.root)
        out: set[str] = set()
        for folder, dirs, files in os.walk(root):
            rel_folder = folder[len(root):] or "/"
            dirs[:] = [d for d in dirs if not _excluded(os.path.join(rel_folder, d), excluded)]
            for name in dirs + files:
                rel = os.path.join(rel_folder, name)
                if not _excluded(rel, excluded):
                    out.add(rel)
        return out


def _excluded(path: str, prefixes: Sequence[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


if __name__ == "__main__":
    tar, built_s = base_tarball(say=lambda m: print(f"debroot: {m}", file=sys.stderr))
    print(json.dumps({"tarball": str(tar), "bytes": tar.stat().st_size, "build_s": round(built_s, 1)}))
