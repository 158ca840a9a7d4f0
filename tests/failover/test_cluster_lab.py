"""The cluster lab itself: the VIP answers, each fault moves it to the other node within a bound, nothing stored
before the fault is lost, the shared directory keeps a single writer, and down() leaves nothing behind.

takeover_s (fault until the VIP answers C-ECHO again from the client side) is printed per mode, never asserted
beyond TAKEOVER_LIMIT_S, which means "it never came back" (pytest -s shows the figures).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from mifaslab.netns import (
    DICOM_PORT,
    ECHOSCU,
    FAULT_MODES,
    NODE_IPS,
    PACS_AET,
    VIP,
    ClusterLab,
    ClusterLabError,
    cleanup_stale,
    netns_list,
    netns_pids,
    process_alive,
)

pytestmark = [pytest.mark.network, pytest.mark.slow]

TAKEOVER_LIMIT_S = 60.0
SPLIT_BRAIN_LIMIT_S = 20.0  # the cut node's monitor gives up its VIP after its Orthanc was fenced
CLIENT_AET = "MIFASTEST"
LAB_LAUNCHER = Path(__file__).resolve().parents[2] / "packaging" / "lab" / "mifas-lab"


def echoscu(lab: ClusterLab, host: str = VIP) -> subprocess.CompletedProcess[bytes]:
    """DCMTK's C-ECHO from the client side (192.0.2.1), independent of the lab's own probe."""
    argv = lab.client_cmd([str(ECHOSCU), "-aet", CLIENT_AET, "-aec", PACS_AET, "-to", "3", "-ta", "3", "-td", "3",
                           host, str(DICOM_PORT)])
    return subprocess.run(argv, capture_output=True, timeout=30, env={**os.environ, "TCP_NODELAY": "1"})


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout_s:g} s")
        time.sleep(0.2)


def test_up_serves_the_vip_and_down_leaves_nothing(cluster: ClusterLab) -> None:
    result = echoscu(cluster)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    status = cluster.status()
    assert status["vip_holders"] == ["nodea"]
    assert status["nodes"]["nodea"]["heartbeat"] and status["nodes"]["nodeb"]["heartbeat"]
    assert status["nodes"]["nodea"]["orthanc_pid"] and status["nodes"]["nodeb"]["orthanc_pid"] is None
    assert cluster.serving_node() == "nodea"
    assert json.loads(cluster.http("/dicom-web/studies")) == []  # the DICOMweb plugin answers through the VIP
    # the members on their own addresses: the active one serves there too, the standby runs no Orthanc
    assert echoscu(cluster, host=NODE_IPS["nodea"]).returncode == 0
    assert echoscu(cluster, host=NODE_IPS["nodeb"]).returncode != 0

    # Heartbeat's RecoverFromFailedStop would run `reboot -nf`: inside a node it must be refused by the guard
    reboot = cluster.node_cmd("nodeb", ["/sbin/reboot", "--help"])  # harmless even if the guard were missing
    guarded = subprocess.run(reboot, capture_output=True, timeout=10)
    assert guarded.returncode == 1 and b"refused" in guarded.stderr
    assert "REFUSED" in (cluster.node_dir("nodeb") / "guard.log").read_text()

    with pytest.raises(ClusterLabError, match="already running"):
        ClusterLab(cluster.workdir, prefix="mifastest").up()

    processes = cluster.orthanc_pids()
    namespaces = cluster.namespaces
    cluster.down()
    cluster.down()  # idempotent
    assert not set(namespaces) & set(netns_list())
    assert cluster.orthanc_pids() == [] and not any(map(process_alive, processes))
    assert not cluster.is_up()


@pytest.mark.parametrize("mode", FAULT_MODES)
def test_fault_moves_the_vip_and_keeps_the_data(cluster: ClusterLab, mode: str) -> None:
    source = Path(get_testdata_file("CT_small.dcm"))
    stored = json.loads(cluster.http("/instances", upload=source))
    assert stored["Status"] in ("Success", "AlreadyStored")

    failed = cluster.fail(mode)
    survivor = cluster.peer(failed)
    takeover_s = cluster.wait_vip_answers(TAKEOVER_LIMIT_S, on=survivor)
    print(f"\ntakeover_s[{mode}] = {takeover_s:.2f} ({failed} -> {survivor})")

    assert echoscu(cluster).returncode == 0
    assert cluster.serving_node() == survivor
    retrieved = cluster.http(f"/instances/{stored['ID']}/file")
    assert sha256(retrieved) == sha256(source.read_bytes())
    # the survivor writes to the shared index too (no lock or corruption left behind by the failed writer)
    after = json.loads(cluster.http("/instances", upload=Path(get_testdata_file("MR_small.dcm"))))
    assert after["Status"] == "Success"
    assert sorted(json.loads(cluster.http("/instances"))) == sorted([stored["ID"], after["ID"]])
    # a single writer on the shared directory: the failed node's Orthanc is gone (killed, stopped or fenced)
    wait_until(lambda: cluster.orthanc_pids() == [cluster.orthanc_pid(survivor)], SPLIT_BRAIN_LIMIT_S,
               f"a single Orthanc ({survivor}'s) on the shared directory after '{mode}'")
    if mode == "link":  # split brain on the LAN until the cut node's monitor gives up its VIP
        wait_until(lambda: cluster.vip_holders() == [survivor], SPLIT_BRAIN_LIMIT_S,
                   f"the cut node {failed} releasing {VIP}")

    cluster.recover(failed)
    status = cluster.status()
    assert status["vip_holders"] == [survivor]  # auto_failback off: the recovered node stays standby
    assert status["nodes"][failed]["heartbeat"] and status["nodes"][failed]["orthanc_pid"] is None
    assert echoscu(cluster).returncode == 0


@pytest.mark.usefixtures("cluster_prerequisites")
def test_a_failed_up_cleans_up_and_shows_the_logs(tmp_path: Path) -> None:
    lab = ClusterLab(tmp_path / "lab", prefix="mifasfail")
    with pytest.raises(ClusterLabError, match="did not answer C-ECHO") as info:
        lab.up(timeout_s=0.5)  # Heartbeat alone needs about 10 s to acquire its resources
    assert "--- last lines of" in str(info.value) and "ha.log" in str(info.value)
    assert not set(lab.namespaces) & set(netns_list())
    assert lab.orthanc_pids() == []


@pytest.mark.usefixtures("cluster_prerequisites")
def test_cleanup_stale_removes_leftovers_of_a_killed_run() -> None:
    namespace = "mifasstale-abc123-nodea"  # a prefix of its own: never touches a live lab of the suite
    subprocess.run(["ip", "netns", "add", namespace], check=True, timeout=10)
    sleeper = subprocess.Popen(["ip", "netns", "exec", namespace, "sleep", "300"])
    try:
        wait_until(lambda: sleeper.pid in netns_pids(namespace), 5, "the leftover process entering its namespace")
        assert cleanup_stale("mifasstale") == [namespace]
        assert sleeper.wait(timeout=10) == -9
        assert namespace not in netns_list()
        assert cleanup_stale("mifasstale") == []
    finally:
        sleeper.kill()
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10)


@pytest.mark.usefixtures("cluster_prerequisites")
def test_the_demo_command_belongs_to_the_lab_launcher(tmp_path: Path) -> None:
    """``mifas-lab cluster-demo`` (the lab's launcher, as a person runs it; not ``mifas-pacs``): ``down`` with no
    lab recorded in --workdir still removes what a killed ``up`` of its prefix left, and says so as JSON."""
    namespace = "mifasdemot-abc123-lan"  # a prefix of its own: never touches a live lab of the suite
    subprocess.run(["ip", "netns", "add", namespace], check=True, timeout=10)
    try:
        result = subprocess.run([str(LAB_LAUNCHER), "cluster-demo", "down", "--workdir", str(tmp_path / "demo"),
                                 "--prefix", "mifasdemot"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"down": True, "stale_namespaces_removed": [namespace]}
        assert namespace not in netns_list()
    finally:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10)
