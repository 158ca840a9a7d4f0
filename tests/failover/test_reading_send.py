"""A saved reading (GSPS, SR, KOS) sent through the real Heartbeat cluster while the active node is killed: the
send resumes on the survivor (viewer.reading.send through ResilientClient.store) and the survivor holds each of
the three objects exactly once; all of them are marked sent.  The client runs in the lab's LAN namespace
(tests/failover/reading_workload.py) and holds its send after the first acknowledged object until the kill."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from mifaslab.netns import ClusterLab
from tests.failover.clients import client_process, json_results
from tests.failover.test_fault_matrix import write_profile

pytestmark = [pytest.mark.network, pytest.mark.slow]

WORKLOAD_LIMIT_S = 150
REPO = Path(__file__).resolve().parents[2]


def test_a_reading_sent_through_a_takeover_arrives_once(cluster: ClusterLab, tmp_path: Path) -> None:
    env = dict(os.environ, TCP_NODELAY="1", PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'packaging' / 'lab'}")
    profiles, status, go = tmp_path / "clusters.json", tmp_path / "status.json", tmp_path / "go"
    write_profile(profiles)
    cmd = cluster.client_cmd([sys.executable, "-m", "tests.failover.reading_workload", "--profiles", str(profiles),
                              "--work", str(tmp_path / "work"), "--status", str(status), "--go", str(go)])
    with client_process(cmd, env=env, cwd=REPO) as workload:
        deadline = time.monotonic() + 60
        while workload.poll() is None and not status.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert workload.poll() is None and status.exists(), "the send ended before the fault: it would prove nothing"
        failed = cluster.fail("kill")
        go.touch()
        results = json_results(workload, WORKLOAD_LIMIT_S)
    print(f"\n[kill] {failed} killed after the first object\n" + "\n".join(results["events"]))
    assert len(results["saved"]) == 3
    assert results["error"] == "" and not results["refused"]
    assert sorted(results["sent"]) == sorted(results["saved"])
    assert sorted(results["held"]) == sorted(results["saved"])  # on the survivor, each exactly once
    assert results["unsent"] == []
    assert cluster.serving_node() == cluster.peer(failed)
