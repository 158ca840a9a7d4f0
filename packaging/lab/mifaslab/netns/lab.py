"""ClusterLab: build, fault, recover and remove the two-node cluster (see the package docstring)."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mifaslab.netns.config import (
    CLIENT_AET,
    CLIENT_IP,
    CLIENT_MOVE_PORT,
    CURL,
    DICOM_PORT,
    ECHO_TIMEOUT_S,
    ECHOSCU,
    FAULT_MODES,
    GUARDED_COMMANDS,
    HA_D,
    HEARTBEAT_BINARY,
    HEARTBEAT_LIB,
    HEARTBEAT_MASTER_TITLE,
    HEARTBEAT_STOP_WAIT_S,
    HTTP_PORT,
    HTTP_TIMEOUT_S,
    NODE_IFACE,
    NODE_IPS,
    NODES,
    PACS_AET,
    PEERS_TIMEOUT_S,
    PREFIX_LENGTH,
    PROBE_INTERVAL_S,
    RECOVER_TIMEOUT_S,
    STATE_FILE,
    UP_TIMEOUT_S,
    VIP,
    guard_script,
    ha_cf,
    monitor_script,
    resource_script,
)
from mifaslab.netns.host import (
    EXIT_WAIT_S,
    ClusterLabError,
    down_after_failure,
    kill_namespace,
    kill_namespaces,
    kill_processes,
    log_tail,
    netns_list,
    netns_pids,
    process_alive,
    process_cmdline,
    process_state,
    run_command,
    send_signal,
    wait_exit,
)
from mifaslab.orthanc import DICOMWEB_PLUGIN, ORTHANC_BINARY, OrthancProcess

log = logging.getLogger(__name__)

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
_WORKDIR_RE = re.compile(r"^/[A-Za-z0-9_./-]+$")
_NAMESPACE_RE = re.compile(r"^(?P<lab>[a-z][a-z0-9]{0,11}-[0-9a-f]{6})-(lan|nodea|nodeb)$")


def cleanup_stale(prefix: str = "mifas") -> list[str]:
    """Delete the namespaces (and kill their processes) left by labs of `prefix` whose process was killed.

    A namespace cannot tell whether its lab is still wanted: call this only when no lab with this prefix should be
    running (e.g. before a CI job), never beside a live one.  Returns the namespaces removed.
    """
    removed = []
    for namespace in netns_list():
        match = _NAMESPACE_RE.match(namespace)
        if match and match["lab"].startswith(f"{prefix}-"):
            stuck = kill_namespace(namespace)
            if stuck:
                raise ClusterLabError(f"processes {stuck} in {namespace} did not exit after SIGKILL.")
            removed.append(namespace)
    return removed


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run a lab, in words (empty when everything is there)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces, mounts and iptables need it)")
    for path, package in ((HEARTBEAT_BINARY, "heartbeat"), (ORTHANC_BINARY, "orthanc"),
                          (DICOMWEB_PLUGIN, "orthanc-dicomweb"), (ECHOSCU, "dcmtk"), (CURL, "curl")):
        if not path.exists():
            missing.append(f"{path} (apt-get install -y {package})")
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux"), ("iptables", "iptables"),
                          ("arptables", "arptables")):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt-get install -y {package})")
    return missing


# -- the lab ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabTls:
    """DICOM TLS for the lab's Orthancs (PEM paths): their certificate (valid for the VIP and both members' IP
    addresses), the CA they trust for clients, and the client certificate the lab's own echo presents."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path

    def orthanc_config(self) -> dict[str, Any]:
        return {"DicomTlsEnabled": True, "DicomTlsCertificate": str(self.cert), "DicomTlsPrivateKey": str(self.key),
                "DicomTlsTrustedCertificates": str(self.ca), "DicomTlsRemoteCertificateRequired": True}

    def dcmtk_args(self) -> list[str]:
        """DCMTK's options for a TLS client (echoscu, storescu) with the client certificate."""
        return ["+tls", str(self.client_key), str(self.client_cert), "+cf", str(self.ca)]


class ClusterLab:
    """Two Orthanc nodes behind a Heartbeat-moved virtual IP, in network namespaces; see the module docstring.

    ``up()`` builds and starts it (and tears everything down again if any step fails), ``down()`` removes it
    (idempotent), ``fail(mode)`` breaks the node holding the VIP, ``recover(node)`` brings a failed node back as
    standby.  ``attach(workdir)`` gives a handle on a lab another process started (the demo command uses it).
    """

    def __init__(self, workdir: Path | str, *, prefix: str = "mifas", tls: LabTls | None = None) -> None:
        if not _PREFIX_RE.match(prefix):
            raise ValueError(f"prefix must be 1-12 lowercase letters or digits, starting with a letter: {prefix!r}")
        self.workdir = Path(workdir).resolve()
        if not _WORKDIR_RE.match(str(self.workdir)):  # the generated shell scripts embed it unquoted
            raise ValueError(f"the workdir may hold only letters, digits and _ . / - : {str(self.workdir)!r}")
        self.prefix = prefix
        self.tls = tls  # set: both Orthancs speak only DICOM TLS and require a client certificate
        self.lab_id = f"{prefix}-{secrets.token_hex(3)}"
        self.failed: dict[str, str] = {}  # node -> fault mode, until recover(node)

    # -- names and paths -------------------------------------------------------------------------------------

    @property
    def lan_ns(self) -> str:
        return f"{self.lab_id}-lan"

    def node_ns(self, node: str) -> str:
        self._check_node(node)
        return f"{self.lab_id}-{node}"

    @property
    def namespaces(self) -> list[str]:
        return [self.lan_ns, *(self.node_ns(node) for node in NODES)]

    @property
    def shared_dir(self) -> Path:
        return self.workdir / "shared"

    def node_dir(self, node: str) -> Path:
        self._check_node(node)
        return self.workdir / node

    def ha_log(self, node: str) -> Path:
        return self.node_dir(node) / "ha.log"

    def orthanc_log(self, node: str) -> Path:
        return self.node_dir(node) / "orthanc.log"

    def client_cmd(self, argv: list[str]) -> list[str]:
        """`argv` run on the client side (192.0.2.1, the LAN namespace): ``ip netns exec LAN argv``."""
        return ["ip", "netns", "exec", self.lan_ns, *argv]

    @staticmethod
    def _check_node(node: str) -> None:
        if node not in NODE_IPS:
            raise ValueError(f"unknown node {node!r}; the lab has {', '.join(NODES)}")

    # -- state shared with other processes ------------------------------------------------------------------

    def _save_state(self) -> None:
        state = {"lab_id": self.lab_id, "prefix": self.prefix, "failed": self.failed}
        tmp = self.workdir / f"{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
        tmp.replace(self.workdir / STATE_FILE)

    @classmethod
    def attach(cls, workdir: Path | str) -> ClusterLab:
        """A handle on the lab whose state lies in `workdir` (started by another process)."""
        path = Path(workdir) / STATE_FILE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ClusterLabError(f"no cluster lab in {workdir} ({path} does not exist).") from None
        except (OSError, ValueError) as exc:
            raise ClusterLabError(f"cannot read {path}: {exc}") from None
        lab = cls(workdir, prefix=state["prefix"])
        if not _NAMESPACE_RE.match(f"{state['lab_id']}-lan"):
            raise ClusterLabError(f"{path} names an invalid lab id {state['lab_id']!r}.")
        lab.lab_id = state["lab_id"]
        lab.failed = dict(state.get("failed", {}))
        return lab

    def is_up(self) -> bool:
        """True when any namespace of this lab exists."""
        existing = set(netns_list())
        return any(namespace in existing for namespace in self.namespaces)

    # -- life cycle ------------------------------------------------------------------------------------------

    def up(self, timeout_s: float = UP_TIMEOUT_S) -> ClusterLab:
        """Build the network, write the configs, start Heartbeat on both nodes and wait until the VIP answers
        C-ECHO and each node sees its peer.  On any failure everything is removed again and the error carries
        the tail of the relevant logs."""
        missing = missing_prerequisites()
        if missing:
            raise ClusterLabError("cannot start the cluster lab; missing: " + "; ".join(missing))
        if (self.workdir / STATE_FILE).exists():
            other = ClusterLab.attach(self.workdir)
            if other.is_up():
                raise ClusterLabError(f"a cluster lab ({other.lab_id}) is already running in {self.workdir}; "
                                      "bring it down first.")
        if self.is_up():
            raise ClusterLabError(f"the cluster lab {self.lab_id} is already up.")
        if self.workdir == Path("/run") or Path("/run") in self.workdir.parents:
            raise ClusterLabError(f"the lab's workdir must not lie under /run ({self.workdir}): the nodes mount "
                                  "their own /run over it.")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.failed = {}
        self._save_state()  # first, so that down() from another process finds the namespaces even if we die
        try:
            self._build_network()
            self._write_shared()
            for node in NODES:
                self._write_node(node)
            for node in NODES:
                self._start_node(node)
            self.wait_vip_answers(timeout_s)
            self._wait_peers(PEERS_TIMEOUT_S)
        except BaseException as exc:
            error = down_after_failure(exc, self.down, self._logs_tail())
            if error is exc:
                raise
            raise error from exc
        return self

    def down(self) -> None:
        """Kill every process in the lab's namespaces, delete the namespaces (their veths, bridge, iptables
        rules and the nodes' private mounts go with them) and the state file.  Idempotent."""
        stuck, errors = kill_namespaces(self.namespaces)
        orphans = self.orthanc_pids()  # none expected: every Orthanc lives in a node namespace
        for pid in orphans:
            send_signal(pid, signal.SIGKILL)
        left = wait_exit(orphans, EXIT_WAIT_S)
        remaining = [ns for ns in self.namespaces if ns in netns_list()]
        if stuck or left or remaining or errors:  # the state file stays, so that down() can be retried
            raise ClusterLabError(f"the cluster lab {self.lab_id} was not fully removed: processes that would not "
                                  f"die {stuck or left}, namespaces left {remaining}. {' '.join(errors)}".strip())
        self._remove_state()

    def _remove_state(self) -> None:
        """Remove the state file, unless it describes another lab (a handle that never came up must not orphan
        the lab that runs in the same workdir)."""
        path = self.workdir / STATE_FILE
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("lab_id") != self.lab_id:
                return
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise ClusterLabError(f"cannot read {path}: {exc}") from None
        path.unlink(missing_ok=True)

    def __enter__(self) -> ClusterLab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- building ----------------------------------------------------------------------------------------------

    def _build_network(self) -> None:
        """LAN namespace with bridge br0 (+ the client address); each node's eth0 is the far end of a veth whose
        near end is a bridge port.  Nothing is created in the host's own network namespace."""
        for namespace in self.namespaces:
            run_command(["ip", "netns", "add", namespace])
            run_command(["ip", "-n", namespace, "link", "set", "lo", "up"])
        lan = self.lan_ns
        run_command(["ip", "-n", lan, "link", "add", "br0", "type", "bridge"])
        run_command(["ip", "-n", lan, "addr", "add", f"{CLIENT_IP}/{PREFIX_LENGTH}", "dev", "br0"])
        run_command(["ip", "-n", lan, "link", "set", "br0", "up"])
        for node, address in NODE_IPS.items():
            port, node_ns = f"veth-{node}", self.node_ns(node)
            run_command(["ip", "-n", lan, "link", "add", port, "type", "veth",
                         "peer", "name", NODE_IFACE, "netns", node_ns])
            run_command(["ip", "-n", lan, "link", "set", port, "master", "br0", "up"])
            run_command(["ip", "-n", node_ns, "addr", "add", f"{address}/{PREFIX_LENGTH}", "dev", NODE_IFACE])
            run_command(["ip", "-n", node_ns, "link", "set", NODE_IFACE, "up"])

    def _write_shared(self) -> None:
        """The shared disk stand-in: Orthanc's storage and index, and the pid file the fencing reads."""
        for sub in ("storage", "index"):
            (self.shared_dir / sub).mkdir(parents=True, exist_ok=True)
        (self.shared_dir / "orthanc.pid").unlink(missing_ok=True)

    def _orthanc_config(self, node: str) -> dict[str, Any]:
        """OrthancProcess's configuration with the shared directory, fixed ports and a per-node Name (so GET
        /system through the VIP tells which node serves)."""
        process = OrthancProcess(
            self.shared_dir, aet=PACS_AET, dicom_port=DICOM_PORT, http_port=HTTP_PORT,
            modalities={CLIENT_AET: (CLIENT_AET, CLIENT_IP, CLIENT_MOVE_PORT)}, always_allow=True,
            dicomweb=True, remote_access=True,
            extra_config={"Name": f"mifas-{node}", **(self.tls.orthanc_config() if self.tls else {})},
        )
        try:
            return process.config()
        finally:
            process.stop()  # closes its HTTP session; nothing runs

    def _write_node(self, node: str) -> None:
        """ha.d (a copy of the system's, for shellfuncs and the IPaddr2 wrapper, plus our ha.cf, haresources,
        authkeys and orthanc-mifas), /var/lib/heartbeat, Orthanc's config, the monitor."""
        node_dir = self.node_dir(node)
        ha_d, lib, state = node_dir / "ha.d", node_dir / "lib", node_dir / "state"
        for path in (ha_d, lib):
            if path.exists():
                shutil.rmtree(path)
        shutil.copytree(HA_D, ha_d, symlinks=True)
        shutil.copytree(HEARTBEAT_LIB, lib, symlinks=True)
        state.mkdir(parents=True, exist_ok=True)
        for stale in ("started", "orthanc.pid", "unhealthy"):
            (state / stale).unlink(missing_ok=True)
        peer_ip = next(ip for other, ip in NODE_IPS.items() if other != node)
        (ha_d / "ha.cf").write_text(ha_cf(self.ha_log(node), peer_ip), encoding="utf-8")
        haresources = f"nodea IPaddr2::{VIP}/{PREFIX_LENGTH} orthanc-mifas\n"  # nodea preferred; identical on both
        (ha_d / "haresources").write_text(haresources, encoding="utf-8")
        authkeys = ha_d / "authkeys"
        authkeys.write_text("auth 1\n1 crc\n", encoding="utf-8")  # integrity only: nobody else is on this LAN
        authkeys.chmod(0o600)
        config = node_dir / "orthanc.json"
        config.write_text(json.dumps(self._orthanc_config(node), indent=2), encoding="utf-8")
        script = ha_d / "resource.d" / "orthanc-mifas"
        script.write_text(self._resource_script(node), encoding="utf-8")
        script.chmod(0o755)
        guard = node_dir / "guard.sh"
        guard.write_text(guard_script(node_dir / "guard.log"), encoding="utf-8")
        guard.chmod(0o755)
        monitor = node_dir / "monitor.sh"
        monitor.write_text(monitor_script(node, state, self.node_dir(node) / "monitor.log"), encoding="utf-8")
        monitor.chmod(0o755)

    def _resource_script(self, node: str) -> str:
        node_dir = self.node_dir(node)
        return resource_script(node, config=node_dir / "orthanc.json", orthanc_log=self.orthanc_log(node),
                               state=node_dir / "state", shared=self.shared_dir,
                               lab_configs=[self.node_dir(n) / "orthanc.json" for n in NODES])

    def _start_node(self, node: str) -> None:
        """Start Heartbeat (it daemonizes) in the node's own network, mount and UTS namespaces; the shell that
        started it then becomes the node's monitor, which keeps the mount namespace alive."""
        node_dir = self.node_dir(node)
        boot = "; ".join([
            "set -e",
            f"hostname {node}",
            f"mount --bind {shlex.quote(str(node_dir / 'ha.d'))} {HA_D}",
            "mount -t tmpfs -o mode=0755 tmpfs /run",
            "mkdir -p /run/heartbeat/ccm /run/heartbeat/crm /run/heartbeat/dopd /run/heartbeat/rsctmp"
            " /run/resource-agents /run/lock",
            f"mount --bind {shlex.quote(str(node_dir / 'lib'))} {HEARTBEAT_LIB}",
            *(f"if [ -e {target} ]; then mount --bind {shlex.quote(str(node_dir / 'guard.sh'))} {target}; fi"
              for target in GUARDED_COMMANDS),
            str(HEARTBEAT_BINARY),
            f"exec {shlex.quote(str(node_dir / 'monitor.sh'))}",
        ])
        argv = ["ip", "netns", "exec", self.node_ns(node), "unshare", "--mount", "--uts", "--propagation",
                "private", "sh", "-c", boot]
        with open(node_dir / "boot.log", "ab") as log_file:
            subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                             start_new_session=True)  # a demo's nodes outlive the command that started them

    # -- observing -------------------------------------------------------------------------------------------

    def _node_processes(self, node: str) -> dict[int, str]:
        return {pid: process_cmdline(pid) for pid in netns_pids(self.node_ns(node))}

    def _heartbeat_master(self, node: str) -> int | None:
        for pid, cmdline in self._node_processes(node).items():
            if cmdline.startswith(HEARTBEAT_MASTER_TITLE) and process_alive(pid):
                return pid
        return None

    def orthanc_pid(self, node: str) -> int | None:
        """The pid of `node`'s Orthanc if it runs (a frozen one counts), else None."""
        config = str(self.node_dir(node) / "orthanc.json")
        for pid in self.orthanc_pids():
            if process_cmdline(pid) == f"{ORTHANC_BINARY} {config}":
                return pid
        return None

    def orthanc_pids(self) -> list[int]:
        """Every live Orthanc of this lab, on either node (more than one would be two writers on the shared
        directory: the fencing exists to prevent that)."""
        configs = {f"{ORTHANC_BINARY} {self.node_dir(node) / 'orthanc.json'}" for node in NODES}
        pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
        return [pid for pid in pids if process_cmdline(pid) in configs and process_alive(pid)]

    def vip_holders(self) -> list[str]:
        """The nodes with the VIP on their eth0: one normally, none during a takeover, two in a split brain."""
        holders = []
        for node in NODES:
            result = run_command(["ip", "-n", self.node_ns(node), "-4", "-o", "addr", "show", "dev", NODE_IFACE],
                                 check=False)
            if f" {VIP}/" in result.stdout:
                holders.append(node)
        return holders

    def active_node(self) -> str:
        """The one node holding the VIP; an error when none or both do."""
        holders = self.vip_holders()
        if len(holders) != 1:
            raise ClusterLabError(f"expected one node holding {VIP}, found {holders or 'none'}.")
        return holders[0]

    def peer(self, node: str) -> str:
        self._check_node(node)
        return next(other for other in NODES if other != node)

    def status(self) -> dict[str, Any]:
        """Who holds the VIP, which Orthanc runs (and whether it is frozen), Heartbeat and monitor per node."""
        holders = self.vip_holders() if self.is_up() else []
        nodes = {}
        for node in NODES:
            processes = self._node_processes(node) if self.is_up() else {}
            orthanc = self.orthanc_pid(node)
            nodes[node] = {
                "address": NODE_IPS[node],
                "holds_vip": node in holders,
                "heartbeat": any(c.startswith(HEARTBEAT_MASTER_TITLE) for c in processes.values()),
                "monitor": any(str(self.node_dir(node) / "monitor.sh") in c for c in processes.values()),
                "orthanc_pid": orthanc,
                "orthanc_frozen": orthanc is not None and process_state(orthanc) == "T",
                "failed": self.failed.get(node),
            }
        return {"lab": self.lab_id, "up": self.is_up(), "vip": VIP, "vip_holder": holders[0] if len(holders) == 1
                else None, "vip_holders": holders, "client": CLIENT_IP, "lan_namespace": self.lan_ns,
                "workdir": str(self.workdir), "nodes": nodes}

    # -- the client side ---------------------------------------------------------------------------------------

    def echo(self, host: str = VIP, timeout_s: float = ECHO_TIMEOUT_S) -> bool:
        """One C-ECHO from the client side with DCMTK's echoscu (TCP_NODELAY=1): True when it succeeded."""
        seconds = str(max(1, round(timeout_s)))
        argv = self.client_cmd([str(ECHOSCU), *(self.tls.dcmtk_args() if self.tls else []), "-aet", CLIENT_AET,
                                "-aec", PACS_AET, "-to", seconds, "-ta", seconds, "-td", seconds, host,
                                str(DICOM_PORT)])
        try:
            result = subprocess.run(argv, capture_output=True, timeout=3 * timeout_s + 5,
                                    env={**os.environ, "TCP_NODELAY": "1"})
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def wait_vip_answers(self, timeout_s: float, *, on: str | None = None) -> float:
        """Poll C-ECHO to the VIP from the client side until it succeeds; return the seconds waited.  With `on`,
        also wait until that node holds the VIP: after a graceful standby the old node goes on answering until it
        has released the VIP, so an echo alone would measure nothing.  Raises ClusterLabError after `timeout_s`
        (the VIP never came back)."""
        if on is not None:
            self._check_node(on)
        start = time.monotonic()
        deadline = start + timeout_s
        while time.monotonic() < deadline:
            if (on is None or on in self.vip_holders()) and self.echo():
                return time.monotonic() - start
            time.sleep(PROBE_INTERVAL_S)
        where = f" on {on}" if on else ""
        raise ClusterLabError(f"the virtual IP {VIP} did not answer C-ECHO{where} within {timeout_s:g} s "
                              f"(status: {json.dumps(self.status()['nodes'])}).")

    def http(self, path: str, *, upload: Path | None = None, host: str = VIP,
             timeout_s: float = HTTP_TIMEOUT_S) -> bytes:
        """GET `path` from Orthanc's REST API (or POST the file `upload`) from the client side, with curl."""
        argv = [str(CURL), "-sS", "--fail", "-m", f"{timeout_s:g}", f"http://{host}:{HTTP_PORT}{path}"]
        if upload is not None:
            argv += ["--data-binary", f"@{upload}", "-H", "Content-Type: application/dicom"]
        try:
            result = subprocess.run(self.client_cmd(argv), capture_output=True, timeout=timeout_s + 5)
        except subprocess.TimeoutExpired:
            raise ClusterLabError(f"HTTP {path} on {host} did not finish within {timeout_s:g} s.") from None
        if result.returncode != 0:
            reason = result.stderr.decode(errors="replace").strip()
            raise ClusterLabError(f"HTTP {path} on {host} failed: {reason}")
        return result.stdout

    def serving_node(self) -> str:
        """The node whose Orthanc answers on the VIP (its configured Name, from GET /system)."""
        name = json.loads(self.http("/system"))["Name"]
        return str(name).removeprefix("mifas-")

    # -- faults -------------------------------------------------------------------------------------------------

    def fail(self, mode: str, node: str | None = None) -> str:
        """Break the node now holding the VIP (or `node`; only "link" may strike a node that does not serve)
        in one of FAULT_MODES; return its name.  Returns at once: the takeover is measured with
        wait_vip_answers()."""
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; use one of {', '.join(FAULT_MODES)}")
        if node is None:
            node = self.active_node()
        else:
            self._check_node(node)
        if mode in ("kill", "freeze"):
            pid = self.orthanc_pid(node)
            if pid is None:
                raise ClusterLabError(f"{node} holds the VIP but its Orthanc is not running.")
            send_signal(pid, signal.SIGKILL if mode == "kill" else signal.SIGSTOP)
        elif mode == "standby":
            master = self._heartbeat_master(node)
            if master is None:
                raise ClusterLabError(f"{node} holds the VIP but its Heartbeat is not running.")
            send_signal(master, signal.SIGTERM)  # what `heartbeat -k` does: graceful, resources released
        else:
            self._cut_link(node)
        self.failed[node] = mode
        self._save_state()
        return node

    def _cut_link(self, node: str) -> None:
        """Drop IP (iptables) and ARP (arptables) on the node's eth0, both ways, inside its namespace."""
        namespace = self.node_ns(node)
        for tool in ("iptables", "arptables"):
            run_command(["ip", "netns", "exec", namespace, tool, "-A", "INPUT", "-i", NODE_IFACE, "-j", "DROP"])
            run_command(["ip", "netns", "exec", namespace, tool, "-A", "OUTPUT", "-o", NODE_IFACE, "-j", "DROP"])

    def _restore_link(self, node: str) -> None:
        namespace = self.node_ns(node)
        for tool in ("iptables", "arptables"):
            run_command(["ip", "netns", "exec", namespace, tool, "-F", "INPUT"])
            run_command(["ip", "netns", "exec", namespace, tool, "-F", "OUTPUT"])

    def recover(self, node: str, timeout_s: float = RECOVER_TIMEOUT_S) -> None:
        """Bring a failed node back as standby: kill whatever is left of it (its Heartbeat, monitor, a frozen
        Orthanc), drop its VIP if a cut node still holds it, restore its link and start Heartbeat again; with
        auto_failback off it stays standby.  Waits until both nodes see each other."""
        self._check_node(node)
        peer = self.peer(node)
        if node not in self.failed and self._heartbeat_master(node) is not None:
            raise ClusterLabError(f"{node} has not failed; nothing to recover.")
        if peer in self.failed or self._heartbeat_master(peer) is None:
            raise ClusterLabError(f"{node} cannot come back as standby: its peer {peer} is not running.")
        namespace = self.node_ns(node)
        self._stop_node(node)
        if node in self.vip_holders():
            run_command(["ip", "-n", namespace, "addr", "del", f"{VIP}/{PREFIX_LENGTH}", "dev", NODE_IFACE])
        self._restore_link(node)
        self._write_node(node)
        self._start_node(node)
        try:
            self._wait_peers(timeout_s)
        except ClusterLabError as exc:
            raise ClusterLabError(f"{exc}{log_tail(self.ha_log(node))}") from exc
        self.failed.pop(node, None)
        self._save_state()

    def _stop_node(self, node: str) -> None:
        """Stop what is left of a failed node: its Heartbeat gracefully when it still runs (a node in the middle
        of a standby shutdown must finish releasing, or the peer would wait out the deadtime), then SIGKILL for
        everything else in its namespace (the monitor, a frozen Orthanc)."""
        master = self._heartbeat_master(node)
        if master is not None:
            send_signal(master, signal.SIGTERM)
            if wait_exit([master], HEARTBEAT_STOP_WAIT_S):
                log.warning("Heartbeat on %s did not stop within %g s; killing it", node, HEARTBEAT_STOP_WAIT_S)
        stuck = kill_processes(self.node_ns(node))
        if stuck:
            raise ClusterLabError(f"processes {stuck} of {node} did not exit after SIGKILL.")

    # -- waiting on Heartbeat ----------------------------------------------------------------------------------

    def _monitor_pid(self, node: str) -> int | None:
        monitor = str(self.node_dir(node) / "monitor.sh")
        return next((pid for pid, cmd in self._node_processes(node).items() if monitor in cmd), None)

    def node_cmd(self, node: str, argv: list[str]) -> list[str]:
        """`argv` run inside `node` (its network, mount and UTS namespaces, entered through its monitor
        process), e.g. ``["cl_status", "rscstatus"]``.  Raises ClusterLabError when the node is not running."""
        monitor = self._monitor_pid(node)
        if monitor is None:
            raise ClusterLabError(f"{node} is not running (no monitor process in {self.node_ns(node)}).")
        return ["nsenter", "-t", str(monitor), "-n", "-m", "-u", *argv]

    def _peer_seen(self, node: str) -> bool:
        """True when `node`'s Heartbeat reports its peer active (cl_status, run inside the node's namespaces)."""
        try:
            argv = self.node_cmd(node, ["cl_status", "nodestatus", self.peer(node)])
        except ClusterLabError:
            return False
        result = run_command(argv, check=False, timeout_s=5)
        return result.returncode == 0 and result.stdout.strip() == "active"

    def _wait_peers(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self._peer_seen(node) for node in NODES):
                return
            time.sleep(PROBE_INTERVAL_S)
        raise ClusterLabError(f"the two Heartbeat nodes did not see each other within {timeout_s:g} s.")

    def _logs_tail(self) -> str:
        parts = []
        for node in NODES:
            for name in ("boot.log", "ha.log", "orthanc.log", "state/resource.log", "monitor.log"):
                parts.append(log_tail(self.node_dir(node) / name))
        return "".join(parts)
