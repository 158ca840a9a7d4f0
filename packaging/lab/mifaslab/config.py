"""The lab's fixed facts: addresses, names, paths and limits.  Pure: nothing here runs.

Every address is in the documentation range 192.0.2.0/24 and lives only inside the lab's own network namespace:

    client LAN    192.0.2.0/25    bridge br0 in the namespace: 192.0.2.1 (the host side, where clients run),
                                  VIP 192.0.2.10, nodea 192.0.2.11, nodeb 192.0.2.12   (each VM's eth0)
    replication   192.0.2.128/25  bridge br1: nodea 192.0.2.131, nodeb 192.0.2.132      (each VM's eth1; DRBD and
                                  Heartbeat's first ring; the host has no address on it)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

NAMESPACE = "mifaslab"
CLIENT_BRIDGE, REPLICATION_BRIDGE = "br0", "br1"
CLIENT_IP = "192.0.2.1"
CLIENT_PREFIX = 25
VIP = "192.0.2.10"
PACS_AET = "MIFASPACS"
DICOM_PORT = 4242
HTTP_PORT = 8042
DRBD_RESOURCE = "r0"
DRBD_DEVICE = "/dev/drbd0"
PACS_MOUNT = "/srv/pacs"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    client_ip: str
    replication_ip: str
    client_mac: str
    replication_mac: str

    @property
    def taps(self) -> tuple[str, str]:
        suffix = self.name[-1]
        return f"tap{suffix}0", f"tap{suffix}1"


NODES = {
    "nodea": NodeSpec("nodea", "192.0.2.11", "192.0.2.131", "52:54:00:0a:00:11", "52:54:00:0a:01:11"),
    "nodeb": NodeSpec("nodeb", "192.0.2.12", "192.0.2.132", "52:54:00:0a:00:12", "52:54:00:0a:01:12"),
}

# -- the guest image ---------------------------------------------------------------------------------------

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# debootstrap installs these (no maintainer script of theirs starts a service)...
BASE_PACKAGES = ("systemd-sysv", "udev", "kmod", "iproute2", "netbase", "procps", "psmisc", "less", "curl",
                 "openssh-server", "linux-image-amd64", "e2fsprogs")
# ... and these go in afterwards inside the chroot, with services kept from starting (policy-rc.d): Orthanc's
# postinst fails in a bare debootstrap (../shared/MACHINE-NOTES.md).
CLUSTER_PACKAGES = ("drbd-utils", "heartbeat", "orthanc", "orthanc-dicomweb", "dcmtk")
# Heartbeat starts these; at boot they stay off.
SERVICES_DISABLED = ("orthanc", "heartbeat", "drbd")
IMAGE_SIZE = "2G"
IMAGE_LABEL = "mifaslab"

# -- limits ------------------------------------------------------------------------------------------------

VM_MEMORY_MIB = 768  # the issue allows at most 1 GiB per VM
VM_CPUS = 1
DRBD_DISK_MIB = 256
BUILD_STEP_TIMEOUT_S = 900.0  # debootstrap or the chroot install, each
BOOT_TIMEOUT_S = 240.0  # qemu start until sshd answers (TCG: about 30-60 s)
KVM_PROBE_S = 20.0  # with KVM, the guest kernel must print within this, else the lab falls back to TCG
SSH_TIMEOUT_S = 60.0  # one command over ssh
DRBD_SYNC_TIMEOUT_S = 300.0
VIP_TIMEOUT_S = 180.0  # Heartbeat start (initdead 30 s) or takeover (deadtime 6 s) until the VIP answers C-ECHO
PROBE_INTERVAL_S = 0.2
CONSOLE_TAIL_LINES = 40

ECHOSCU = Path("/usr/bin/echoscu")
STORESCU = Path("/usr/bin/storescu")


def cache_dir() -> Path:
    """Where built images live, outside the repository: $MIFAS_LAB_CACHE, else $XDG_CACHE_HOME/mifas-lab."""
    if os.environ.get("MIFAS_LAB_CACHE"):
        return Path(os.environ["MIFAS_LAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mifas-lab"


def run_dir() -> Path:
    """The running lab's files (overlays, DRBD disks, consoles, state): $MIFAS_LAB_RUN, else /var/tmp/mifas-lab."""
    return Path(os.environ.get("MIFAS_LAB_RUN") or "/var/tmp/mifas-lab")


GUEST_FILES = Path(__file__).resolve().parent.parent / "guest"
