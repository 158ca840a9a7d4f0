"""One lab VM: a qemu process inside the lab's namespace, its disks, its serial console in a file.

Disks: a qcow2 overlay on the cached system image (``/dev/vda``, so both VMs share one image and each keeps its
own changes) and a raw DRBD backing disk (``/dev/vdb``).  Two NICs on the lab's taps with fixed MACs (the guest's
systemd-networkd matches on them): eth0 on the client LAN, eth1 on the replication link.  The kernel and initrd
come from the image folder; ``mifas.node=`` on the command line tells the guest which node it is.

Acceleration: KVM when ``/dev/kvm`` works, else TCG (``-cpu max``).  On these build machines /dev/kvm exists but
nested KVM aborts or hangs (../shared/MACHINE-NOTES.md), so "auto" starts the first VM with KVM, waits
:data:`~mifaslab.config.KVM_PROBE_S` for the guest kernel's first line on the console, and falls back to TCG for
good when it does not come.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from mifaslab import config
from mifaslab.host import LabError, process_alive, run, tail
from mifaslab.image import Image

QEMU = "qemu-system-x86_64"
QEMU_IMG = "qemu-img"
KERNEL_FIRST_LINE = "Linux version"


@dataclass(frozen=True)
class VmFiles:
    folder: Path
    node: str

    overlay = property(lambda self: self.folder / f"{self.node}.qcow2")
    drbd_disk = property(lambda self: self.folder / f"{self.node}-drbd.img")
    console = property(lambda self: self.folder / f"{self.node}-console.log")
    qemu_log = property(lambda self: self.folder / f"{self.node}-qemu.log")


def create_disks(image: Image, files: VmFiles) -> None:
    """A fresh overlay on the system image and an empty (sparse, zero-filled) DRBD backing disk."""
    files.folder.mkdir(parents=True, exist_ok=True)
    files.overlay.unlink(missing_ok=True)
    run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image.system), str(files.overlay)])
    with open(files.drbd_disk, "wb") as disk:
        disk.truncate(config.DRBD_DISK_MIB << 20)


def start(image: Image, files: VmFiles, accel: str, *, append_extra: str = "", qemu_log: Path | None = None) -> int:
    """Start the VM and return qemu's pid (``ip netns exec`` execs it in place); the console starts afresh."""
    node = config.NODES[files.node]
    cpu = ["-cpu", "host"] if accel == "kvm" else ["-cpu", "max"]
    append = f"root=/dev/vda rw console=ttyS0 net.ifnames=0 mifas.node={node.name} panic=-1 {append_extra}".strip()
    nics = []
    for index, (tap, mac) in enumerate(zip(node.taps, (node.client_mac, node.replication_mac), strict=True)):
        nics += ["-netdev", f"tap,id=n{index},ifname={tap},script=no,downscript=no",
                 "-device", f"virtio-net-pci,netdev=n{index},mac={mac},romfile="]
    argv = ["ip", "netns", "exec", config.NAMESPACE, QEMU, "-name", node.name, "-machine", f"pc,accel={accel}",
            *cpu, "-smp", str(config.VM_CPUS), "-m", str(config.VM_MEMORY_MIB), "-nodefaults", "-no-user-config",
            "-display", "none", "-serial", f"file:{files.console}", "-monitor", "none", "-no-reboot",
            "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", append,
            "-drive", f"file={files.overlay},format=qcow2,if=virtio,cache=writeback",
            "-drive", f"file={files.drbd_disk},format=raw,if=virtio,cache=writeback",
            *nics]
    files.console.write_text("")
    with open(qemu_log or files.qemu_log, "ab") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return process.pid


def kill(pid: int) -> None:
    """Pull the plug: SIGKILL, and wait until it is gone (reaped by us when it is our child)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        if not process_alive(pid):
            return
        time.sleep(0.05)
    raise LabError(f"qemu (pid {pid}) did not exit after SIGKILL.")


def wait_console(files: VmFiles, pid: int, text: str, timeout_s: float) -> bool:
    """Wait until `text` appears on the VM's console; False if qemu exited or the time ran out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if text in files.console.read_text(errors="replace"):
                return True
        except OSError:
            pass
        if not process_alive(pid):
            return False
        time.sleep(0.2)
    return False


def boot_failure(files: VmFiles, pid: int, what: str) -> LabError:
    """The error for a VM that did not come up: what went wrong, and the end of its console and of qemu's log
    (quoted here because the run folder is removed with everything else)."""
    console = tail(files.console, header=f"{files.node}'s serial console")
    qemu = tail(files.qemu_log, 10, header=f"qemu's messages for {files.node}")
    return LabError(f"{files.node} did not come up: {what}.{console}{qemu}")


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)
