"""The running lab: two VMs, DRBD between them, Heartbeat moving the VIP, driven over ssh from the namespace.

State lives in the run folder (:func:`mifaslab.config.run_dir`, ``state.json``): which qemu pids belong to the
lab, the acceleration chosen, which node was failed.  Every command reads it, so ``up`` in one process and
``failover`` or ``down`` in another work together, and ``up`` twice is refused while a lab is up.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from mifaslab import config, vm
from mifaslab import image as image_module
from mifaslab.host import (
    LabError,
    kill_namespace,
    missing_tools,
    netns_exists,
    netns_pids,
    process_alive,
    run,
    setup_network,
    tail,
    taps_left,
)
from mifaslab.image import Image, Say

STATE = "state.json"
UP_TOOLS = {"qemu-system-x86_64": "qemu-system-x86", "qemu-img": "qemu-utils", "ssh": "openssh-client",
            "ip": "iproute2"}
FAILOVER_MODES = ("hard", "graceful")


def _quiet(_: str) -> None:
    pass


class Lab:
    def __init__(self, run_folder: Path | None = None, *, say: Say = _quiet) -> None:
        self.folder = run_folder or config.run_dir()
        self.say = say

    # -- state ---------------------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.folder / STATE

    def state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_path)

    def is_up(self) -> bool:
        return self.state() is not None or netns_exists()

    def _image(self) -> Image:
        state = self._require_up()
        return Image(Path(state["image"]))

    def _require_up(self) -> dict[str, Any]:
        state = self.state()
        if state is None:
            raise LabError("No lab is up: run `mifas-lab up` first.")
        return state

    def files(self, node: str) -> vm.VmFiles:
        return vm.VmFiles(self.folder, node)

    # -- up / down -------------------------------------------------------------------------------------------

    def up(self, *, accel: str = "auto", boot_timeout_s: float = config.BOOT_TIMEOUT_S,
           append_extra: str = "") -> dict[str, Any]:
        """Build (or reuse) the image, start both VMs, set up DRBD, start Heartbeat, wait for the VIP."""
        if self.is_up():
            state = self.state() or {}
            since = time.strftime("%H:%M:%S", time.localtime(state.get("started_at", 0))) if state else "?"
            raise LabError(f"The lab is already up (since {since}; namespace {config.NAMESPACE}). "
                           "Run `mifas-lab down` first, or `mifas-lab status` to see it.")
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, tap devices, qemu on them).")
        missing = missing_tools(UP_TOOLS)
        if not config.ECHOSCU.exists():
            missing.append(f"{config.ECHOSCU} is missing (apt-get install -y dcmtk)")
        if missing:
            raise LabError("cannot start the lab: " + "; ".join(missing))
        started = time.monotonic()
        image, build_s = image_module.build(say=self.say)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        state: dict[str, Any] = {"started_at": time.time(), "image": str(image.folder), "nodes": {}, "failed": {},
                                 "accel": accel, "build_s": round(build_s, 1)}
        self._save(state)
        try:
            setup_network()
            for node in config.NODES:
                vm.create_disks(image, self.files(node))
            state["accel"], pid = self._start_first(image, accel, append_extra)
            state["nodes"]["nodea"] = {"pid": pid}
            self._save(state)
            pid = vm.start(image, self.files("nodeb"), state["accel"], append_extra=append_extra)
            state["nodes"]["nodeb"] = {"pid": pid}
            self._save(state)
            self.say(f"both VMs started ({state['accel'].upper()}); waiting for them to boot")
            for node in config.NODES:
                self._wait_ssh(node, boot_timeout_s - (time.monotonic() - started))
            self.say("both VMs are up; setting up DRBD (protocol C)")
            self._drbd_first_start()
            self.say("starting Heartbeat on both nodes")
            for node in config.NODES:
                self.ssh(node, "systemctl start heartbeat")
            self.wait_vip(config.VIP_TIMEOUT_S)
        except BaseException:
            self.say("the lab did not come up; removing what was started")
            self.down(quiet=True)
            raise
        state["up_s"] = round(time.monotonic() - started - build_s, 1)
        self._save(state)
        self.say(f"the lab is up: VIP {config.VIP} (AE {config.PACS_AET}, DICOM {config.DICOM_PORT}, "
                 f"HTTP {config.HTTP_PORT}) in namespace {config.NAMESPACE}, {state['up_s']:.0f} s")
        return state

    def _start_first(self, image: Image, accel: str, append_extra: str) -> tuple[str, int]:
        """Start nodea, choosing the acceleration: KVM if asked (or auto and it works), else TCG; returns the
        acceleration and qemu's pid."""
        files = self.files("nodea")
        if accel == "tcg" or (accel == "auto" and not vm.kvm_usable()):
            return "tcg", vm.start(image, files, "tcg", append_extra=append_extra)
        pid = vm.start(image, files, "kvm", append_extra=append_extra, qemu_log=self.folder / "kvm-probe.log")
        if vm.wait_console(files, pid, vm.KERNEL_FIRST_LINE, config.KVM_PROBE_S):
            return "kvm", pid
        vm.kill(pid)
        if accel == "kvm":
            raise LabError(f"with KVM, nodea's kernel printed nothing within {config.KVM_PROBE_S:g} s; use "
                           f"--accel tcg (or auto).{tail(self.folder / 'kvm-probe.log', 10, header='qemu with KVM')}")
        self.say("KVM does not work here (nested virtualisation); using TCG software emulation")
        return "tcg", vm.start(image, files, "tcg", append_extra=append_extra)

    def down(self, *, quiet: bool = False) -> str:
        """Stop everything and remove the namespace (and with it the taps) and the run folder.  Idempotent."""
        state = self.state()
        if state is None and not netns_exists():
            shutil.rmtree(self.folder, ignore_errors=True)
            return "Nothing to stop: no lab is up."
        for info in (state or {}).get("nodes", {}).values():
            if process_alive(info["pid"]):
                vm.kill(info["pid"])
        if netns_exists():
            stuck = kill_namespace(config.NAMESPACE)
            if stuck:
                raise LabError(f"processes {stuck} in the lab's namespace would not exit.")
        shutil.rmtree(self.folder, ignore_errors=True)
        left = taps_left()
        if left:
            raise LabError(f"tap devices {left} are still on the host.")
        return "The lab is down: VMs stopped, namespace and taps removed."

    # -- talking to the nodes ----------------------------------------------------------------------------------

    def ssh_argv(self, node: str, *, tty: bool = False) -> list[str]:
        key = self._image().key
        return ["ip", "netns", "exec", config.NAMESPACE, "ssh", "-i", str(key), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-o", "ConnectTimeout=5", "-o", "ServerAliveInterval=2", "-o", "ServerAliveCountMax=3",
                *(["-t"] if tty else []), f"root@{config.NODES[node].client_ip}"]

    def ssh(self, node: str, command: str, *, timeout_s: float = config.SSH_TIMEOUT_S,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([*self.ssh_argv(node), command], timeout_s=timeout_s, check=check)

    def client(self, argv: list[str], *, timeout_s: float = 60.0, check: bool = False,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command on the lab's client side (inside its namespace)."""
        full = ["ip", "netns", "exec", config.NAMESPACE, "env", "TCP_NODELAY=1",
                *[f"{k}={v}" for k, v in (env or {}).items()], *argv]
        return run(full, timeout_s=timeout_s, check=check)

    def _wait_ssh(self, node: str, timeout_s: float) -> None:
        state = self._require_up()
        pid = state["nodes"][node]["pid"]
        deadline = time.monotonic() + max(timeout_s, 1.0)
        while time.monotonic() < deadline:
            if not process_alive(pid):
                raise vm.boot_failure(self.files(node), pid, "the VM stopped (its kernel panicked or it powered off)")
            if self.ssh(node, "true", timeout_s=15, check=False).returncode == 0:
                return
            time.sleep(1)
        raise vm.boot_failure(self.files(node), pid, f"no ssh login within {timeout_s:.0f} s")

    def echo(self, host: str = config.VIP) -> bool:
        result = self.client([str(config.ECHOSCU), "-to", "2", "-ta", "2", "-td", "2", "-aec", config.PACS_AET,
                              host, str(config.DICOM_PORT)], timeout_s=15)
        return result.returncode == 0

    def wait_vip(self, timeout_s: float, *, on: str | None = None) -> float:
        """Wait until the VIP answers C-ECHO (and, with `on`, is held by that node); the seconds waited."""
        started = time.monotonic()
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if (on is None or self.vip_holder() == on) and self.echo():
                return time.monotonic() - started
            time.sleep(config.PROBE_INTERVAL_S)
        raise LabError(f"the virtual IP {config.VIP} did not answer C-ECHO"
                       f"{' on ' + on if on else ''} within {timeout_s:g} s; `mifas-lab status` shows the nodes.")

    def vip_holder(self) -> str | None:
        """The node whose eth0 carries the VIP (asked over ssh; a dead node is skipped)."""
        state = self._require_up()
        for node, info in state["nodes"].items():
            if not process_alive(info["pid"]):
                continue
            result = self.ssh(node, f"ip -4 -o addr show dev eth0 | grep -q ' {config.VIP}/'", timeout_s=15,
                              check=False)
            if result.returncode == 0:
                return node
        return None

    # -- DRBD --------------------------------------------------------------------------------------------------

    def _drbd_first_start(self) -> None:
        r = config.DRBD_RESOURCE
        for node in config.NODES:
            self.ssh(node, f"drbdadm create-md --force {r} && drbdadm up {r}", timeout_s=120)
        self._wait_drbd(lambda s: all(v["cstate"] == "Connected" for v in s.values()), 120, "connected")
        # Both backing disks are fresh and all zeros, hence identical: skip the initial full sync (DRBD's own
        # recipe for new, empty disks) instead of copying 256 MiB of zeros through a TCG guest.
        self.ssh("nodea", f"drbdadm -- --clear-bitmap new-current-uuid {r}", timeout_s=60)
        self._wait_drbd(lambda s: all(v["dstate"] == "UpToDate/UpToDate" for v in s.values()), 60, "UpToDate")
        self.ssh("nodea", f"drbdadm primary {r} && mkfs.ext4 -q -L pacs {config.DRBD_DEVICE} && "
                          f"drbdadm secondary {r}", timeout_s=180)

    def drbd_state(self, node: str) -> dict[str, str]:
        r = config.DRBD_RESOURCE
        result = self.ssh(node, f"echo $(drbdadm role {r}) $(drbdadm cstate {r}) $(drbdadm dstate {r})",
                          timeout_s=20, check=False)
        words = result.stdout.split()
        if result.returncode != 0 or len(words) != 3:
            return {"role": "?", "cstate": "?", "dstate": "?"}
        return {"role": words[0], "cstate": words[1], "dstate": words[2]}

    def _wait_drbd(self, ready, timeout_s: float, what: str, nodes: tuple[str, ...] = tuple(config.NODES)) -> float:
        started = time.monotonic()
        deadline = started + timeout_s
        states: dict[str, dict[str, str]] = {}
        while time.monotonic() < deadline:
            states = {node: self.drbd_state(node) for node in nodes}
            if ready(states):
                return time.monotonic() - started
            time.sleep(1)
        raise LabError(f"DRBD did not become {what} within {timeout_s:g} s: {states}")

    # -- status ------------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        state = self.state()
        if state is None:
            return {"up": False, "namespace": netns_exists()}
        nodes: dict[str, Any] = {}
        for node, info in state["nodes"].items():
            entry: dict[str, Any] = {"vm": "running" if process_alive(info["pid"]) else "stopped",
                                     "failed": state["failed"].get(node)}
            if entry["vm"] == "running":
                script = (f"echo role=$(drbdadm role {config.DRBD_RESOURCE}) "
                          f"cstate=$(drbdadm cstate {config.DRBD_RESOURCE}) "
                          f"dstate=$(drbdadm dstate {config.DRBD_RESOURCE}) "
                          f"heartbeat=$(systemctl is-active heartbeat) "
                          f"vip=$(ip -4 -o addr show dev eth0 | grep -c ' {config.VIP}/') "
                          f"mounted=$(mountpoint -q {config.PACS_MOUNT} && echo yes || echo no) "
                          f"orthanc=$(curl -s -f -o /dev/null -m 3 http://127.0.0.1:{config.HTTP_PORT}/system "
                          f"&& echo up || echo down)")
                result = self.ssh(node, script, timeout_s=20, check=False)
                if result.returncode == 0:
                    for word in result.stdout.split():
                        key, _, value = word.partition("=")
                        entry[key] = value
                    entry["vip"] = entry.get("vip") == "1"
                else:
                    entry["ssh"] = "unreachable"
            nodes[node] = entry
        holder = next((n for n, e in nodes.items() if e.get("vip") is True), None)
        return {"up": True, "accel": state["accel"], "vip": config.VIP, "vip_holder": holder,
                "primary": next((n for n, e in nodes.items() if str(e.get("role", "")).startswith("Primary")), None),
                "vip_answers_echo": self.echo(), "nodes": nodes,
                "namespace": config.NAMESPACE, "up_s": state.get("up_s"), "build_s": state.get("build_s")}

    # -- faults ------------------------------------------------------------------------------------------------

    def failover(self, mode: str) -> dict[str, Any]:
        """Break the active node (hard: kill its qemu; graceful: Heartbeat standby) and wait for the takeover."""
        if mode not in FAILOVER_MODES:
            raise LabError(f"unknown failover mode {mode!r}; use one of {', '.join(FAILOVER_MODES)}.")
        state = self._require_up()
        active = self.vip_holder()
        if active is None:
            raise LabError("no node holds the VIP right now; nothing to fail over from.")
        peer = next(n for n in config.NODES if n != active)
        if not process_alive(state["nodes"][peer]["pid"]):
            raise LabError(f"{peer} is down: a failover now would leave nobody; `mifas-lab recover {peer}` first.")
        struck = time.monotonic()
        if mode == "hard":
            vm.kill(state["nodes"][active]["pid"])
            state["failed"][active] = "hard"
        else:
            self.ssh(active, "/usr/share/heartbeat/hb_standby all", timeout_s=30)
        self._save(state)
        waited = self.wait_vip(config.VIP_TIMEOUT_S, on=peer)
        takeover_s = time.monotonic() - struck
        return {"mode": mode, "failed": active, "serving": peer, "takeover_s": round(takeover_s, 2),
                "waited_s": round(waited, 2)}

    def recover(self, node: str) -> dict[str, Any]:
        """Restart a killed node (same disks), let it rejoin as standby and wait for DRBD to resync."""
        if node not in config.NODES:
            raise LabError(f"unknown node {node!r}; the nodes are {', '.join(config.NODES)}.")
        state = self._require_up()
        if process_alive(state["nodes"][node]["pid"]):
            raise LabError(f"{node} is running; only a node that was failed hard needs recovering.")
        started = time.monotonic()
        state["nodes"][node]["pid"] = vm.start(self._image(), self.files(node), state["accel"])
        self._save(state)
        self._wait_ssh(node, config.BOOT_TIMEOUT_S)
        self.ssh(node, f"drbdadm up {config.DRBD_RESOURCE} && systemctl start heartbeat", timeout_s=120)
        boot_s = time.monotonic() - started
        resync_s = self._wait_drbd(lambda s: all(v["cstate"] == "Connected" and v["dstate"] == "UpToDate/UpToDate"
                                                 for v in s.values()), config.DRBD_SYNC_TIMEOUT_S, "in sync")
        state["failed"].pop(node, None)
        self._save(state)
        return {"node": node, "boot_s": round(boot_s, 1), "resync_s": round(resync_s, 2)}

    # -- for people ----------------------------------------------------------------------------------------------

    def shell_argv(self, node: str) -> list[str]:
        if node not in config.NODES:
            raise LabError(f"unknown node {node!r}; the nodes are {', '.join(config.NODES)}.")
        self._require_up()
        return self.ssh_argv(node, tty=True)

    def exec_argv(self, argv: list[str]) -> list[str]:
        if not argv:
            raise LabError("exec needs a command: mifas-lab exec -- COMMAND ...")
        if not netns_exists():
            raise LabError("No lab is up: run `mifas-lab up` first.")
        return ["ip", "netns", "exec", config.NAMESPACE, "env", "TCP_NODELAY=1", *argv]

    def profiles_json(self) -> str:
        """A cluster profile file for mifas-pacs / mifas-viewer pointing at the lab."""
        def address(host: str, name: str | None = None) -> dict[str, Any]:
            entry: dict[str, Any] = {"host": host, "port": config.DICOM_PORT,
                                     "dicomweb_url": f"http://{host}:{config.HTTP_PORT}/dicom-web",
                                     "rest_url": f"http://{host}:{config.HTTP_PORT}"}
            if name:
                entry["name"] = name
            return entry
        return json.dumps({"profiles": [{
            "name": "lab", "ae_title": config.PACS_AET, "calling_ae": "MIFAS", "transports": ["dimse", "dicomweb"],
            "vip": address(config.VIP),
            "members": [address(spec.client_ip, f"node {n[-1].upper()}") for n, spec in config.NODES.items()],
        }]}, indent=1)


def quote(argv: list[str]) -> str:
    return shlex.join(argv)


def namespace_pids() -> list[int]:
    return netns_pids(config.NAMESPACE)
