"""The guest image: one Debian 12 system disk shared (copy-on-write) by both VMs, built once and cached.

``build()`` debootstraps a minimal Debian, installs DRBD, Heartbeat, Orthanc (+ DICOMweb) and DCMTK inside the
chroot with services kept from starting, lays the lab's own files over it (``packaging/lab/guest``), and packs
the tree into an ext4 image with ``mkfs.ext4 -d`` (no loop mount).  The kernel and initrd are copied out beside it
for qemu's ``-kernel``/``-initrd``.

The cache (:func:`mifaslab.config.cache_dir`, outside the repository) holds one ``image-<recipe>`` folder, where
``<recipe>`` hashes everything that goes into the image (suite, package lists, the guest files, this module):
changing any of it builds a new image on the next ``build`` or ``up``.  A build works in ``build-<recipe>.partial``
and renames it into place only when complete, so an interrupted build never looks like an image; the next build
says so and starts over.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mifaslab import config
from mifaslab.host import LabError, host_mirrors, missing_tools, remove_tree, tail

Say = Callable[[str], None]

BUILD_TOOLS = {"debootstrap": "debootstrap", "mkfs.ext4": "e2fsprogs", "ssh-keygen": "openssh-client",
               "chroot": "coreutils", "mount": "mount"}
IMAGE_FILE, KERNEL_FILE, INITRD_FILE, KEY_FILE, INFO_FILE = "system.img", "vmlinuz", "initrd.img", "id_lab", "image.json"


@dataclass(frozen=True)
class Image:
    """A complete cached image."""

    folder: Path

    system = property(lambda self: self.folder / IMAGE_FILE)
    kernel = property(lambda self: self.folder / KERNEL_FILE)
    initrd = property(lambda self: self.folder / INITRD_FILE)
    key = property(lambda self: self.folder / KEY_FILE)

    def info(self) -> dict:
        return json.loads((self.folder / INFO_FILE).read_text())


# Git keeps only the executable bit, so a clone has 0644 where the author had 0600: a guest file's mode comes from
# here (or is 0755 / 0644 by its executable bit), never from the checkout.  Heartbeat refuses an authkeys file
# that others can read.
GUEST_MODES = {"etc/ha.d/authkeys": 0o600}


def guest_mode(path: Path) -> int:
    rel = str(path.relative_to(config.GUEST_FILES))
    return GUEST_MODES.get(rel, 0o755 if path.stat().st_mode & 0o111 else 0o644)


def recipe() -> dict[str, object]:
    """Everything that decides the image's content (its hash names the cache folder)."""
    guest = {}
    for path in sorted(config.GUEST_FILES.rglob("*")):
        if path.is_file():
            rel = str(path.relative_to(config.GUEST_FILES))
            guest[rel] = [hashlib.sha256(path.read_bytes()).hexdigest(), oct(guest_mode(path))]
    return {"suite": config.SUITE, "base": list(config.BASE_PACKAGES), "cluster": list(config.CLUSTER_PACKAGES),
            "disabled": list(config.SERVICES_DISABLED), "size": config.IMAGE_SIZE, "guest": guest,
            "builder": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}


def recipe_id() -> str:
    return hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:12]


def cached(cache: Path | None = None) -> Image | None:
    """The complete image for the current recipe, if the cache holds one."""
    folder = (cache or config.cache_dir()) / f"image-{recipe_id()}"
    if all((folder / name).is_file() for name in (IMAGE_FILE, KERNEL_FILE, INITRD_FILE, KEY_FILE, INFO_FILE)):
        return Image(folder)
    return None


def host_mirror() -> str:
    """The Debian mirror this host's apt uses (so the guest comes from the same place), else deb.debian.org."""
    return host_mirrors()[0]


def build(*, cache: Path | None = None, force: bool = False, say: Say = print) -> tuple[Image, float]:
    """The image for the current recipe, built when the cache lacks it (or `force`); returns it and the seconds
    the build took (0 when it came from the cache)."""
    cache = cache or config.cache_dir()
    for stale in cache.glob("build-*.partial"):  # never reused: an interrupted build may have stopped anywhere
        say(f"removing a half-built image left by an interrupted build: {stale.name}")
        remove_tree(stale)
    if not force:
        image = cached(cache)
        if image is not None:
            say(f"image {image.folder.name} is cached in {cache}")
            return image, 0.0
    if os.geteuid() != 0:
        raise LabError("building the image needs root (debootstrap, chroot and mounts).")
    missing = missing_tools(BUILD_TOOLS)
    if missing:
        raise LabError("cannot build the image: " + "; ".join(missing))
    cache.mkdir(parents=True, exist_ok=True)
    ident = recipe_id()
    work = cache / f"build-{ident}.partial"
    work.mkdir()
    started = time.monotonic()
    try:
        _build_into(work, say)
        (work / INFO_FILE).write_text(json.dumps({"recipe": recipe(), "built_at": time.time(),
                                                   "build_s": round(time.monotonic() - started, 1)}, indent=1))
        final = cache / f"image-{ident}"
        if final.exists():
            remove_tree(final)
        work.rename(final)
    except BaseException:
        remove_tree(work)
        raise
    for old in cache.glob("image-*"):
        if old != final:
            say(f"removing the image of an older recipe: {old.name}")
            remove_tree(old)
    seconds = time.monotonic() - started
    say(f"built image {final.name} in {seconds:.0f} s")
    return Image(final), seconds


def _build_into(work: Path, say: Say) -> None:
    root = work / "root"
    log = work / "build.log"
    mirror = host_mirror()
    say(f"debootstrap {config.SUITE} from {mirror} (a few minutes)")
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(config.BASE_PACKAGES)}", "--components=main",
          config.SUITE, str(root), mirror], log, "debootstrap")
    say("installing " + ", ".join(config.CLUSTER_PACKAGES) + " in the guest")
    with _chroot_mounts(root):
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\n# no service starts while the image is built\nexit 101\n")
        policy.chmod(0o755)
        shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
        env = ["env", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C"]
        _run(["chroot", str(root), *env, "apt-get", "update", "-qq"], log, "apt-get update in the guest")
        _run(["chroot", str(root), *env, "apt-get", "install", "-y", "-qq", "--no-install-recommends",
              *config.CLUSTER_PACKAGES], log, "apt-get install in the guest")
        _run(["chroot", str(root), "apt-get", "clean"], log, "apt-get clean")
        policy.unlink()
    say("laying the lab's files over the guest")
    _copy_tree(config.GUEST_FILES, root)
    (root / "etc/fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 1\n")
    (root / "etc/hostname").write_text("mifaslab\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n192.0.2.11 nodea\n192.0.2.12 nodeb\n"
                                    "192.0.2.131 nodea-repl\n192.0.2.132 nodeb-repl\n")
    (root / "etc/resolv.conf").write_text("")
    (root / "etc/machine-id").write_text("")  # each VM makes its own at first boot
    (root / config.PACS_MOUNT.lstrip("/")).mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mifas-lab", "-f", str(work / KEY_FILE)], log, "ssh-keygen")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text((work / f"{KEY_FILE}.pub").read_text())
    (ssh_dir / "authorized_keys").chmod(0o600)
    units = ["mifas-node.service", "systemd-networkd.service", "ssh.service"]
    _run(["chroot", str(root), "systemctl", "enable", *units], log, "systemctl enable")
    for service in config.SERVICES_DISABLED:
        subprocess.run(["chroot", str(root), "systemctl", "disable", f"{service}.service"], capture_output=True)
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise LabError("the guest has no kernel or initrd in /boot; the build log is " + str(log) + tail(log))
    shutil.copyfile(kernels[-1], work / KERNEL_FILE)
    shutil.copyfile(initrds[-1], work / INITRD_FILE)
    say("packing the guest into an ext4 image")
    image = work / IMAGE_FILE
    _run(["truncate", "-s", config.IMAGE_SIZE, str(image)], log, "truncate")
    _run(["mkfs.ext4", "-q", "-F", "-L", config.IMAGE_LABEL, "-d", str(root), str(image)], log, "mkfs.ext4")
    remove_tree(root)


def _run(argv: list[str], log: Path, what: str) -> None:
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        try:
            result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    timeout=config.BUILD_STEP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise LabError(f"{what} did not finish within {config.BUILD_STEP_TIMEOUT_S:g} s{tail(log)}") from None
    if result.returncode != 0:
        raise LabError(f"{what} failed (status {result.returncode}){tail(log)}")


class _chroot_mounts:
    """/proc, /sys and /dev inside the chroot for the package scripts; always unmounted again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mounted: list[Path] = []

    def __enter__(self) -> None:
        for source, kind in (("proc", "proc"), ("sysfs", "sysfs")):
            target = self.root / source.replace("sysfs", "sys")
            subprocess.run(["mount", "-t", kind, source, str(target)], check=True)
            self.mounted.append(target)
        for sub in ("dev", "dev/pts"):
            target = self.root / sub
            subprocess.run(["mount", "--bind", f"/{sub}", str(target)], check=True)
            self.mounted.append(target)

    def __exit__(self, *exc: object) -> None:
        for target in reversed(self.mounted):
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _copy_tree(source: Path, target: Path) -> None:
    for path in sorted(source.rglob("*")):
        dest = target / path.relative_to(source)
        if path.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            dest.chmod(guest_mode(path))
