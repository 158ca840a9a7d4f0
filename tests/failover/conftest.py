"""The real two-node Heartbeat cluster (mifaslab.netns) as a fixture.

Function scope: every fault test gets a fresh cluster (about 12 s to bring up, most of it Heartbeat R1's initial
resource negotiation), so one test's broken node can never leak into the next.  Needs root, Heartbeat, Orthanc with
the DICOMweb plugin, DCMTK, curl, iptables and arptables: skipped with the reason on a developer's machine, a
failure in CI (tests.support.require).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mifaslab.netns import ClusterLab, missing_prerequisites
from tests.support import require

LAB_PREFIX = "mifastest"


@pytest.fixture
def cluster_prerequisites() -> None:
    """Root and the packages the lab runs (skip with the reason locally, fail in CI)."""
    missing = missing_prerequisites()
    require(not missing, "the cluster lab needs: " + "; ".join(missing))


@pytest.fixture
def cluster(cluster_prerequisites: None, tmp_path: Path) -> Iterator[ClusterLab]:
    """A started ClusterLab (nodea active, nodeb standby); always torn down, even when the test fails."""
    lab = ClusterLab(tmp_path / "lab", prefix=LAB_PREFIX)
    lab.up()
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture
def tls_cluster(cluster_prerequisites: None, tmp_path: Path) -> Iterator[ClusterLab]:
    """The same cluster with DICOM TLS only: a certificate for the VIP and both members, our client certificate
    required (certificates made by tests.pacs.certs)."""
    from mifaslab.netns.lab import LabTls
    from tests.pacs.certs import make_pki

    pki = make_pki(tmp_path / "pki", server_ips=("192.0.2.10", "192.0.2.11", "192.0.2.12"))
    tls = LabTls(ca=pki.ca, cert=pki.server.cert, key=pki.server.key, client_cert=pki.client.cert,
                 client_key=pki.client.key)
    lab = ClusterLab(tmp_path / "lab", prefix=LAB_PREFIX, tls=tls)
    lab.up()
    try:
        yield lab
    finally:
        lab.down()
