"""A 300-slice study sent through the real Heartbeat cluster while the active node is killed: the send
(viewer.share.send through ResilientClient.store) resumes on the survivor, which then holds every instance exactly
once and byte for byte, and no acknowledged instance was ever offered to a C-STORE again.  The client runs in
the lab's LAN namespace (tests/failover/study_send_workload.py) and holds its send after 100 acknowledged
instances until the kill."""

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

WORKLOAD_LIMIT_S = 180
REPO = Path(__file__).resolve().parents[2]


def test_a_study_sent_through_a_takeover_arrives_once_byte_for_byte(cluster: ClusterLab, tmp_path: Path) -> None:
    env = dict(os.environ, TCP_NODELAY="1", PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'packaging' / 'lab'}")
    profiles, status, go = tmp_path / "clusters.json", tmp_path / "status.json", tmp_path / "go"
    write_profile(profiles)
    cmd = cluster.client_cmd([sys.executable, "-m", "tests.failover.study_send_workload", "--profiles",
                              str(profiles), "--work", str(tmp_path / "work"), "--status", str(status),
                              "--go", str(go)])
    with client_process(cmd, env=env, cwd=REPO) as workload:
        deadline = time.monotonic() + 90
        while workload.poll() is None and not status.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert workload.poll() is None and status.exists(), "the send ended before the fault: it would prove nothing"
        failed = cluster.fail("kill")
        go.touch()
        results = json_results(workload, WORKLOAD_LIMIT_S)
    print(f"\n[kill] {failed} killed after {status.read_text()}\n" + "\n".join(results["events"]))
    uids = results["uids"]
    assert len(uids) == 300
    assert results["error"] == "" and not results["refused"] and results["already_held"] == []
    assert sorted(results["sent"]) == sorted(uids) and len(set(results["sent"])) == 300
    assert sorted(results["found"]) == sorted(uids)  # on the survivor, each exactly once
    assert results["identical"] == sorted(uids) and results["received_twice"] == []  # byte for byte
    assert results["store_calls"] >= 2  # the send did resume on a new association
    assert results["offered_after_ack"] == []  # never sent again after its acknowledgement
    assert cluster.serving_node() == cluster.peer(failed)
