"""A real two-node PACS cluster in network namespaces, for the failover tests and for demos (issue 3, item 6).

Topology (every address in the documentation range 192.0.2.0/24, inside namespaces this module creates)::

    <prefix>-<id>-lan  : bridge br0, 192.0.2.1/24 = the client side (run clients with lab.client_cmd(argv))
         | veth-nodea          | veth-nodeb
    <prefix>-<id>-nodea: eth0 192.0.2.11      <prefix>-<id>-nodeb: eth0 192.0.2.12
         Heartbeat 3.0.6 (R1, crm off) on both; haresources "nodea IPaddr2::192.0.2.10/24 orthanc-mifas"
         VIP 192.0.2.10 -> the Orthanc of whichever node holds it (AE MIFASPACS, DICOM 4242, HTTP 8042, DICOMweb)

Each node runs in its own network, mount and UTS namespace (``ip netns exec NODE unshare --mount --uts``):
Heartbeat names nodes by ``uname -n`` and keeps its state in ``/etc/ha.d``, ``/run`` and ``/var/lib/heartbeat``,
so those are bind-mounted per node (shared/MACHINE-NOTES.md has the verified recipe).

Why the resource script fences.  Both Orthancs use ONE storage and index directory (``workdir/shared``), standing
in for the DRBD disk of a real pair, and SQLite must never have two writers.  A real cluster guarantees that with
STONITH (power off the other node before taking its disk) and DRBD's single-primary rule.  Here the node
namespaces share the host's PID namespace, so the ``orthanc-mifas start`` script can do what STONITH does: it
``kill -9``s any Orthanc of this lab that still runs (the pid is recorded in ``shared/orthanc.pid``; a scan for
both nodes' command lines catches one whose pid file was not written yet), waits until it has really exited, and
only then starts its own.  Without this, a cut link (split brain: the cut node still believes it is primary) or a
frozen (SIGSTOPped) Orthanc would leave a second writer on the shared index.

Why a monitor.  Heartbeat R1 (``crm off``) never checks its resources after starting them: a ``kill -9`` of the
active Orthanc or a SIGSTOP would never move the VIP.  Each node therefore runs a small shell loop
(``monitor.sh``) in its namespaces: while this node holds the VIP and its Orthanc has been started, it asks
``GET /system`` (2 s timeout) every second; after 2 consecutive failures it stops Heartbeat on this node (SIGTERM,
a graceful shutdown), which releases the resources and makes the peer take over at once, without waiting for the
deadtime.  The node is then out of the cluster until :meth:`ClusterLab.recover` brings it back as standby.

Why reboot is guarded.  When a resource's stop fails, Heartbeat's ResourceManager (RecoverFromFailedStop) runs
``pkill -9 heartbeat`` and ``reboot -nf``: in a namespace that would kill every lab's Heartbeat and reboot the
host.  Each node therefore bind-mounts a refusing script over reboot, init, pkill and killall in its private mount
namespace (``guard.sh``; refusals are logged to ``guard.log``).

Why ARP is cut too.  ``fail("link")`` drops everything on the node's eth0 with iptables, but ARP is not IP:
the cut node would go on answering "who has 192.0.2.10" on the bridge and could win the client's ARP cache
back from the survivor's gratuitous ARP.  arptables drops ARP on the same interface, as a pulled cable would.

    with ClusterLab(tmp_path / "lab") as lab:
        subprocess.run(lab.client_cmd(["/usr/bin/echoscu", VIP, "4242", "-aec", "MIFASPACS"]), check=True)
        node = lab.fail("kill")
        takeover_s = lab.wait_vip_answers(30)

Measured on the build machines (2 cores): bring-up about 12 s (Heartbeat R1 waits 10 s after both nodes are up
before its initial resource acquisition); takeover_s, fault until the VIP answers C-ECHO from the client again,
about 2.7 s for kill, 3.3 s for standby (Orthanc's own graceful stop takes most of it), 4.4-5.4 s for link (the
deadtime) and 6 s for freeze (two 2 s probe timeouts).

Modules: ``config`` (addresses, limits, the generated files), ``host`` (commands, processes, namespaces), ``lab``
(:class:`ClusterLab`), ``demo`` (the ``cluster-demo`` command).

Everything a lab writes lies under its workdir (configs, logs, the shared storage, ``lab.json``, the state that
lets another process attach to it: :meth:`ClusterLab.attach`).  Needs root, Heartbeat, Orthanc (+ DICOMweb
plugin), DCMTK's echoscu, curl, iptables and arptables: ``apt-get install -y heartbeat iptables arptables orthanc
orthanc-dicomweb dcmtk curl``.
"""

from __future__ import annotations

from mifaslab.netns.config import (
    CLIENT_AET,
    CLIENT_IP,
    DICOM_PORT,
    ECHOSCU,
    FAULT_MODES,
    HTTP_PORT,
    NODE_IPS,
    NODES,
    PACS_AET,
    VIP,
)
from mifaslab.netns.demo import add_cluster_demo_parser, run_cluster_demo
from mifaslab.netns.host import ClusterLabError, netns_list, netns_pids, process_alive
from mifaslab.netns.lab import ClusterLab, cleanup_stale, missing_prerequisites

__all__ = [
    "CLIENT_AET", "CLIENT_IP", "DICOM_PORT", "ECHOSCU", "FAULT_MODES", "HTTP_PORT", "NODES", "NODE_IPS",
    "PACS_AET", "VIP", "ClusterLab", "ClusterLabError", "add_cluster_demo_parser", "cleanup_stale",
    "missing_prerequisites", "netns_list", "netns_pids", "process_alive", "run_cluster_demo",
]
