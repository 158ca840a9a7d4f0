"""Host-side plumbing: bounded commands, the lab's network namespace and its bridges and taps, missing tools.

The namespace helpers come from the namespace cluster lab (mifaslab.netns.host); this module adds what the VM lab
needs on top and turns every failure into a :class:`LabError` whose message a person can act on.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from mifaslab import config
from mifaslab.netns.host import (
    ClusterLabError,
    kill_namespace,
    netns_list,
    netns_pids,
    process_alive,
    run_command,
)

__all__ = ["LabError", "kill_namespace", "missing_tools", "netns_exists", "netns_list", "netns_pids",
           "host_mirrors", "process_alive", "remove_tree", "run", "setup_network", "tail", "taps_left"]


class LabError(ClusterLabError):
    """What went wrong, in words; the CLI prints it as one paragraph and exits 1."""


def run(argv: list[str], *, timeout_s: float = 30.0, check: bool = True,
        input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """A bounded command (the cluster lab's run_command) whose failures are LabErrors."""
    return run_command(argv, timeout_s=timeout_s, check=check, input_text=input_text, error=LabError)


def host_mirrors() -> tuple[str, str]:
    """The Debian mirror and the security mirror ("" if none) this host's apt uses, so that a guest image or a
    test root comes from the same place; deb.debian.org when the host names none."""
    mirror, security = config.DEFAULT_MIRROR, ""
    for path in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            urls = [w.rstrip("/") for w in words[1:] if w.startswith("http")] if words[:1] in (["URIs:"], ["deb"]) else []
            for url in urls:
                if "security" in url:
                    security = security or url
                elif mirror == config.DEFAULT_MIRROR:
                    mirror = url
    return mirror, security


def remove_tree(path: Path, *, error: type[Exception] = LabError) -> None:
    """Remove a folder, first unmounting anything an interrupted run left mounted inside it.  If something stays
    mounted, `error` is raised and nothing is deleted: deleting through a bind mount of the host's /dev would
    delete the host's device nodes."""
    prefix = str(path.resolve()) + "/"

    def mounted() -> list[str]:
        return [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                if line.split()[1].startswith(prefix)]

    for mount in sorted(mounted(), reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)
    if mounted():
        raise error(f"cannot unmount everything under {path}; not deleting it")
    shutil.rmtree(path, ignore_errors=True)


def missing_tools(tools: dict[str, str]) -> list[str]:
    """'TOOL (apt-get install PACKAGE)' for each tool not on PATH."""
    return [f"{tool} is missing (apt-get install -y {package})" for tool, package in tools.items()
            if shutil.which(tool) is None]


def tail(path: Path, lines: int = config.CONSOLE_TAIL_LINES, *, header: str | None = None) -> str:
    """The last lines of a log under a header ('' when it is empty or missing), for error messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"\n--- last lines of {header or path} ---\n" + "\n".join(text) if text else ""


def netns_exists() -> bool:
    return config.NAMESPACE in netns_list()


def setup_network() -> None:
    """The lab's namespace: loopback, the client bridge with the host side's address, the replication bridge,
    and one tap per VM interface on the right bridge."""
    ns = config.NAMESPACE
    run(["ip", "netns", "add", ns])
    ip = ["ip", "-n", ns]
    run([*ip, "link", "set", "lo", "up"])
    for bridge in (config.CLIENT_BRIDGE, config.REPLICATION_BRIDGE):
        run([*ip, "link", "add", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
        run([*ip, "link", "set", bridge, "up"])
    run([*ip, "addr", "add", f"{config.CLIENT_IP}/{config.CLIENT_PREFIX}", "dev", config.CLIENT_BRIDGE])
    for node in config.NODES.values():
        for tap, bridge in zip(node.taps, (config.CLIENT_BRIDGE, config.REPLICATION_BRIDGE), strict=True):
            run([*ip, "tuntap", "add", tap, "mode", "tap"])
            run([*ip, "link", "set", tap, "master", bridge])
            run([*ip, "link", "set", tap, "up"])


def taps_left() -> list[str]:
    """The lab's tap devices still present on the host (they should only ever exist inside its namespace)."""
    names = {tap for node in config.NODES.values() for tap in node.taps}
    result = run(["ip", "-o", "link", "show"], check=False)
    return [word.rstrip(":").split("@")[0] for line in result.stdout.splitlines()
            for word in line.split()[1:2] if word.rstrip(":").split("@")[0] in names]
