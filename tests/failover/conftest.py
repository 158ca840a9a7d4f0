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
