"""Replicas behind shaped links: the test bed for co-allocated retrieval (one study fetched from several sources at
once, the work shared by measured throughput).

Topology (every address in the documentation range 192.0.2.0/24, inside namespaces this module creates)::

    <prefix>-lan : bridge br0, 192.0.2.1/24 = the client (``with network_namespace(bed.lan):``); C-MOVE
                   destination "MIFASCA" at port bed.move_port
         | veth-a                     | veth-b                      ...
    <prefix>-a : eth0 192.0.2.31      <prefix>-b : eth0 192.0.2.32   ...
                 tbf 60 Mbit/s out                 tbf 100 Mbit/s out
                 Orthanc (AE ORTHANCCA, DICOM 4242, HTTP 8042, DICOMweb /dicom-web/), each with its own storage

Each replica's egress, what it sends to the client (DIMSE and HTTP alike), is shaped by a token bucket on its
eth0: ``tc qdisc add dev eth0 root tbf rate <R>mbit burst 64kbit latency 100ms`` (netem is absent from the host
kernel, tbf works; shared/MACHINE-NOTES.md).  tbf counts whole Ethernet frames, so TCP payload tops out at about
95 % of the rate (60 Mbit/s is about 7.1 MB/s of DICOM, 100 Mbit/s about 11.9 MB/s).  What the client sends (the
requests, the C-STORE responses of a C-GET) is not shaped.

Each Orthanc is an :class:`~mifaslab.orthanc.OrthancProcess` started by a thread inside its replica's namespace,
so it lives there; its ``url`` (127.0.0.1) means the replica's own loopback and is reachable only from inside that
namespace: use :meth:`Replica.rest` (which enters it), never ``replica.orthanc.rest`` from elsewhere.  Calling AE
titles are not checked (``DicomAlwaysAllow*``), so C-ECHO, C-FIND, C-GET and C-STORE work from any AE.

    with ShapedReplicas(tmp_path / "bed", rates_mbit=(60, 100)) as bed:
        bed.upload(parts)
        with network_namespace(bed.lan):
            FastGetClient(bed.replicas[1].node()).get(study_uid, sink=received.append)
            bed.kill(0)  # replica a dies: SIGKILL of its Orthanc, then its link goes down

One bed per prefix at a time: entering a bed first removes every namespace of its prefix (what a killed run left)
with the processes inside.  Needs root, iproute2 (ip, tc, ss), Orthanc and its DICOMweb plugin.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mifaslab.netns.host import (
    ClusterLabError,
    down_after_failure,
    kill_namespace,
    kill_namespaces,
    log_tail,
    netns_list,
    network_namespace,
    process_alive,
    process_cmdline,
    run_command,
    send_signal,
    wait_exit,
)
from mifaslab.orthanc import DICOMWEB_PLUGIN, ORTHANC_BINARY, OrthancProcess
from viewer.pacs.node import Node, Timeouts

log = logging.getLogger(__name__)

CLIENT_IP = "192.0.2.1"
REPLICA_IP_BASE = 31  # replica a at 192.0.2.31, b at .32, ...
PREFIX_LENGTH = 24
BRIDGE = "br0"
REPLICA_IFACE = "eth0"
DICOM_PORT = 4242
HTTP_PORT = 8042
MOVE_AET = "MIFASCA"
MOVE_PORT = 11113
REPLICAS_MAX = 8
RATE_MBIT_MIN, RATE_MBIT_MAX = 0.1, 10_000.0
TBF_BURST = "64kbit"
TBF_LATENCY_MS = 100
DRAIN_S = 2.0  # kill(): how long the killed Orthanc's connections may take to deliver their end to the client
PROBE_TIMEOUTS = Timeouts(connect_s=2.0, acse_s=5.0, dimse_s=5.0, network_s=10.0)

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
_T = TypeVar("_T")


@dataclass
class Replica:
    """One source of the study: an Orthanc in its own namespace behind a link shaped to `rate_mbit`."""

    name: str  # "replica a"
    letter: str  # "a"
    namespace: str  # "<prefix>-a"
    host: str  # "192.0.2.31", as the client on the lan sees it
    dicom_port: int
    http_port: int
    rate_mbit: float
    aet: str
    orthanc: OrthancProcess
    killed: bool = field(default=False)

    @property
    def dicomweb_url(self) -> str:
        return f"http://{self.host}:{self.http_port}/dicom-web"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def node(self, calling_ae: str = MOVE_AET, timeouts: Timeouts | None = None) -> Node:
        """The replica as the client on the lan sees it (DIMSE and DICOMweb)."""
        return Node(name=self.name, ae_title=self.aet, host=self.host, port=self.dicom_port, calling_ae=calling_ae,
                    dicomweb_url=self.dicomweb_url if self.orthanc.dicomweb else None,
                    timeouts=timeouts or Timeouts())

    def rest(self, method: str, path: str, **kwargs: Any) -> Any:
        """Orthanc's REST API, called from inside the replica's namespace over its loopback (not shaped)."""
        with network_namespace(self.namespace):
            return self.orthanc.rest(method, path, **kwargs)


class ShapedReplicas:
    """The bed as a context manager (see the module docstring).  Attributes once entered: `lan` (the client's
    namespace), `replicas`, `client_ip`, `move_aet` / `move_port` (the C-MOVE destination every replica knows),
    `up_s` (how long entering took)."""

    def __init__(self, work_dir: Path | str, rates_mbit: Sequence[float] = (60, 100), prefix: str = "mifasca",
                 aet: str = "ORTHANCCA") -> None:
        if not _PREFIX_RE.match(prefix):
            raise ValueError(f"the prefix must be 1-12 lower-case letters and digits, starting with a letter, "
                             f"not {prefix!r}")
        rates = [float(rate) for rate in rates_mbit]
        if not 1 <= len(rates) <= REPLICAS_MAX:
            raise ValueError(f"between 1 and {REPLICAS_MAX} replicas, not {len(rates)}")
        for rate in rates:
            if not RATE_MBIT_MIN <= rate <= RATE_MBIT_MAX:
                raise ValueError(f"a rate must lie between {RATE_MBIT_MIN:g} and {RATE_MBIT_MAX:g} Mbit/s, not {rate:g}")
        self.work_dir = Path(work_dir).resolve()
        self.prefix = prefix
        self.aet = aet
        self.rates_mbit = rates
        self.lan = f"{prefix}-lan"
        self.client_ip = CLIENT_IP
        self.move_aet = MOVE_AET
        self.move_port = MOVE_PORT
        self.replicas: list[Replica] = []
        self.up_s: float | None = None
        for index, rate in enumerate(rates):
            letter = "abcdefgh"[index]
            orthanc = OrthancProcess(
                self.work_dir / f"replica-{letter}", aet=aet, dicom_port=DICOM_PORT, http_port=HTTP_PORT,
                modalities={"mifasca": (MOVE_AET, CLIENT_IP, MOVE_PORT)}, always_allow=True, dicomweb=True,
                remote_access=True, extra_config={"Name": f"mifas-replica-{letter}"},
            )
            self.replicas.append(Replica(
                name=f"replica {letter}", letter=letter, namespace=f"{prefix}-{letter}",
                host=f"192.0.2.{REPLICA_IP_BASE + index}", dicom_port=DICOM_PORT, http_port=HTTP_PORT,
                rate_mbit=rate, aet=orthanc.aet, orthanc=orthanc,
            ))

    @property
    def namespaces(self) -> list[str]:
        return [self.lan, *(replica.namespace for replica in self.replicas)]

    # -- life cycle ------------------------------------------------------------------------------------------

    def __enter__(self) -> ShapedReplicas:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> ShapedReplicas:
        """Remove what a killed run of this prefix left, build the network, start every Orthanc in its namespace
        and check each answers C-ECHO from the lan.  On failure everything is removed again."""
        missing = [f"{path} (apt-get install -y {package})" for path, package in
                   ((ORTHANC_BINARY, "orthanc"), (DICOMWEB_PLUGIN, "orthanc-dicomweb")) if not path.exists()]
        if missing:
            raise ClusterLabError("cannot build the shaped replicas; missing: " + "; ".join(missing))
        started = time.monotonic()
        self.cleanup_stale()
        try:
            self._build_network()
            self._each(self._start_orthanc)
            self._check_reachable()
        except BaseException as exc:
            logs = "".join(log_tail(replica.orthanc.log_path, 10) for replica in self.replicas)
            error = down_after_failure(exc, self.down, logs)
            if error is exc:
                raise
            raise error from exc
        self.up_s = time.monotonic() - started
        log.info("shaped replicas up in %.1f s: %s", self.up_s,
                 ", ".join(f"{r.name} at {r.host} ({r.rate_mbit:g} Mbit/s)" for r in self.replicas))
        return self

    def down(self) -> None:
        """SIGKILL every process in the bed's namespaces and delete them (veths, bridge and qdiscs go with them);
        reap the Orthancs.  Idempotent; raises ClusterLabError if anything is left."""
        stuck, errors = kill_namespaces(self.namespaces)
        errors += [f"processes {pids} in {namespace} did not exit after SIGKILL." for namespace, pids in stuck.items()]
        for replica in self.replicas:
            replica.orthanc.stop()  # already killed with its namespace: this reaps it and closes its session
        orphans = self.orthanc_pids()  # none expected: each Orthanc lives in its replica's namespace
        for pid in orphans:
            send_signal(pid, signal.SIGKILL)
        left = wait_exit(orphans, 10.0)
        remaining = [namespace for namespace in self.namespaces if namespace in netns_list()]
        if errors or left or remaining:
            raise ClusterLabError(f"the shaped replicas {self.prefix} were not fully removed: namespaces left "
                                  f"{remaining}, Orthancs left {left}. {' '.join(errors)}".strip())

    def cleanup_stale(self) -> list[str]:
        """Delete every namespace of this prefix (``<prefix>-lan``, ``<prefix>-a`` ...) with the processes in it:
        what a killed run left.  Never call it beside a live bed of the same prefix."""
        pattern = re.compile(rf"^{re.escape(self.prefix)}-(lan|[a-h])$")
        removed = []
        for namespace in netns_list():
            if pattern.match(namespace):
                stuck = kill_namespace(namespace)
                if stuck:
                    raise ClusterLabError(f"processes {stuck} in {namespace} did not exit after SIGKILL.")
                removed.append(namespace)
        if removed:
            log.warning("removed the stale namespaces %s", removed)
        return removed

    def orthanc_pids(self) -> list[int]:
        """Every live Orthanc process started with a configuration of this bed (any namespace)."""
        configs = {f"{ORTHANC_BINARY} {replica.orthanc.work_dir / 'orthanc.json'}" for replica in self.replicas}
        pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
        return [pid for pid in pids if process_cmdline(pid) in configs and process_alive(pid)]

    # -- building ----------------------------------------------------------------------------------------------

    def _build_network(self) -> None:
        for namespace in self.namespaces:
            run_command(["ip", "netns", "add", namespace])
            run_command(["ip", "-n", namespace, "link", "set", "lo", "up"])
        run_command(["ip", "-n", self.lan, "link", "add", BRIDGE, "type", "bridge"])
        run_command(["ip", "-n", self.lan, "addr", "add", f"{CLIENT_IP}/{PREFIX_LENGTH}", "dev", BRIDGE])
        run_command(["ip", "-n", self.lan, "link", "set", BRIDGE, "up"])
        for replica in self.replicas:
            port = f"veth-{replica.letter}"
            run_command(["ip", "-n", self.lan, "link", "add", port, "type", "veth",
                         "peer", "name", REPLICA_IFACE, "netns", replica.namespace])
            run_command(["ip", "-n", self.lan, "link", "set", port, "master", BRIDGE, "up"])
            run_command(["ip", "-n", replica.namespace, "addr", "add", f"{replica.host}/{PREFIX_LENGTH}",
                         "dev", REPLICA_IFACE])
            run_command(["ip", "-n", replica.namespace, "link", "set", REPLICA_IFACE, "up"])
            run_command(["ip", "netns", "exec", replica.namespace, "tc", "qdisc", "add", "dev", REPLICA_IFACE,
                         "root", "tbf", "rate", f"{replica.rate_mbit:g}mbit", "burst", TBF_BURST,
                         "latency", f"{TBF_LATENCY_MS}ms"])

    def _start_orthanc(self, replica: Replica) -> None:
        with network_namespace(replica.namespace):  # Orthanc (our child) is born in the replica's namespace
            replica.orthanc.start()  # waits for /system and C-ECHO on the replica's own loopback

    def _check_reachable(self) -> None:
        """C-ECHO every replica from the lan, over the bridge and the shaped link."""
        from viewer.pacs.dimse import DimseClient  # heavy; only needed once the Orthancs run

        with network_namespace(self.lan):
            for replica in self.replicas:
                with DimseClient(replica.node(timeouts=PROBE_TIMEOUTS)) as client:
                    client.echo()

    def _each(self, action: Callable[[Replica], _T], replicas: Sequence[Replica] | None = None) -> list[_T]:
        """`action` on every replica at once (one thread each); the first failure is raised after all ended."""
        chosen = list(self.replicas if replicas is None else replicas)
        if not chosen:
            return []
        with ThreadPoolExecutor(max_workers=len(chosen), thread_name_prefix="shaped") as pool:
            futures = [pool.submit(action, replica) for replica in chosen]
            errors = [future.exception() for future in futures]
        for error in errors:
            if error is not None:
                raise error
        return [future.result() for future in futures]

    # -- using -----------------------------------------------------------------------------------------------

    def upload(self, parts: Sequence[bytes]) -> None:
        """Store the Part 10 files on every live replica (``POST /instances`` over each one's loopback, all
        replicas at once)."""
        parts = list(parts)

        def store(replica: Replica) -> None:
            with network_namespace(replica.namespace):
                for data in parts:
                    replica.orthanc.upload_bytes(data)

        self._each(store, [replica for replica in self.replicas if not replica.killed])

    def kill(self, index: int, *, silent: bool = False) -> None:
        """Replica `index` dies: its Orthanc is SIGKILLed and its link goes down; no byte of it reaches the
        client afterwards, and new connections to it time out (the client sees NodeUnreachableError or a timeout).

        ``silent=False`` (a crashed server): SIGKILL first; the kernel ends Orthanc's connections (FIN after
        what was queued, or RST) and the link goes down once they have reached the client (at most
        :data:`DRAIN_S`), so a transfer in flight breaks at once with an aborted association.
        ``silent=True`` (a pulled cable, a power cut): the link goes down first, then the SIGKILL; the client
        hears nothing more and notices only by its own silence timeout (``Timeouts.dimse_s``)."""
        replica = self.replicas[index]
        if replica.killed:
            raise ClusterLabError(f"{replica.name} was already killed.")
        replica.killed = True
        if silent:
            self._link_down(replica)
        self._kill_orthanc(replica)
        if not silent:
            self._drain(replica)
            self._link_down(replica)
        log.info("%s killed (%s)", replica.name, "silent" if silent else "connections ended")

    def _kill_orthanc(self, replica: Replica) -> None:
        process = replica.orthanc._process  # OrthancProcess keeps its Popen there; stop() reaps it later
        if process is None:
            return
        process.kill()
        try:
            process.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            raise ClusterLabError(f"the Orthanc of {replica.name} (pid {process.pid}) did not die after SIGKILL.") \
                from None

    def _drain(self, replica: Replica) -> None:
        """Wait until the dead Orthanc's orphaned connections have delivered their FIN (or RST), then for the
        token bucket's queue (at most its latency) to empty."""
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline:
            closing = run_command(["ip", "netns", "exec", replica.namespace, "ss", "-Htn", "state", "fin-wait-1",
                                   "state", "closing", "state", "last-ack", "state", "syn-recv"], check=False)
            if closing.returncode == 0 and not closing.stdout.strip():
                break
            time.sleep(0.02)
        else:
            log.warning("%s: connections still closing after %g s; cutting the link anyway", replica.name, DRAIN_S)
        time.sleep(TBF_LATENCY_MS / 1000 + 0.05)

    def _link_down(self, replica: Replica) -> None:
        run_command(["ip", "-n", replica.namespace, "link", "set", REPLICA_IFACE, "down"])


__all__ = ["CLIENT_IP", "DICOM_PORT", "HTTP_PORT", "MOVE_AET", "MOVE_PORT", "Replica", "ShapedReplicas"]
