"""The cluster-in-VMs lab: two Debian 12 VMs running Orthanc on DRBD (protocol C) + Heartbeat behind a virtual IP.

    mifas-lab build | up | status [--json] | failover --mode hard|graceful | recover NODE | drill [--json]
              | shell NODE | exec -- CMD ... | profile | down
    mifas-lab cluster-demo up | failover [--mode kill|standby|link|freeze] | status | down

Topology (all inside the network namespace ``mifaslab``; addresses in 192.0.2.0/24)::

    client LAN br0 192.0.2.0/25:  host side 192.0.2.1 (mifas-pacs, mifas-viewer, the drill's clients)
        |  tapa0                       |  tapb0
    +---------------------------+   +---------------------------+
    | nodea  eth0 192.0.2.11    |   | nodeb  eth0 192.0.2.12    |
    |        eth1 192.0.2.131 --+---+-- eth1 192.0.2.132        |   replication br1 192.0.2.128/25:
    | Heartbeat: VIP .10, drbddisk r0, Filesystem /srv/pacs (sync), Orthanc (TCP_NODELAY=1)         |
    | /dev/vdb -> DRBD r0 (protocol C) <---------------------------> /dev/vdb                       |
    +---------------------------+   +---------------------------+

Modules: ``config`` (facts and limits), ``host`` (commands, namespace), ``image`` (build and cache the guest),
``vm`` (qemu), ``lab`` (:class:`~mifaslab.lab.Lab`: up, status, failover, recover, down), ``drill`` (the failover
drill), ``cli``.  docs/lab.md is the guide for IT.

Beside the VM lab, two tools for tests, benchmarks and demos that are not part of the viewer: ``orthanc``
(:class:`~mifaslab.orthanc.OrthancProcess`, a real Orthanc as a child process) and ``netns`` (the lighter
two-node Heartbeat + Orthanc cluster in network namespaces, without VMs or DRBD, that the failover tests use;
``mifas-lab cluster-demo`` runs it).
"""
